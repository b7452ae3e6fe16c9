"""cemnet.nn.norm: the spectral batch norm against two nn.BatchNorm2d, in every layout, and its gradient."""

import pytest
import torch
from conftest import DOUBLE, assert_rel_close
from torch import nn

from cemnet import nn as cnn
from cemnet.nn import functional as SF
from cemnet.nn.functional import _norm
from cemnet.spectral import to_frequency


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("mean_ratio", [-1.0, float("inf")])  # always centre first / always one pass
def test_batch_norm_equals_two_batch_norms(momentum, mean_ratio, monkeypatch):
    monkeypatch.setattr(_norm, "ONE_PASS_MAX_MEAN_RATIO", mean_ratio)
    layer = cnn.SpectralBatchNorm2d(4, momentum=momentum).double()
    real, imag = nn.BatchNorm2d(4, momentum=momentum).double(), nn.BatchNorm2d(4, momentum=momentum).double()
    for bn in (layer.real, layer.imag):
        nn.init.normal_(bn.weight)
        nn.init.normal_(bn.bias)
    real.load_state_dict(layer.real.state_dict())
    imag.load_state_dict(layer.imag.state_dict())
    for _ in range(3):
        # A generic complex input with offsets: a real map's spectrum would have imaginary means of zero.
        x = torch.randn(6, 4, 5, 5, dtype=torch.complex128) + torch.tensor([0.5, -1.0, 2.0, 0.0])[:, None, None] * 1j
        out, expected_real, expected_imag = layer(x), real(x.real), imag(x.imag)
        assert_rel_close(out.real, expected_real)
        assert_rel_close(out.imag, expected_imag)
        upstream = torch.randn_like(out)
        grads = torch.autograd.grad(torch.view_as_real(out), (layer.real.weight, layer.imag.bias),
                                    torch.view_as_real(upstream))
        assert_rel_close(grads[0], torch.autograd.grad(expected_real, real.weight, upstream.real)[0])
        assert_rel_close(grads[1], torch.autograd.grad(expected_imag, imag.bias, upstream.imag)[0])
    for mine, theirs in ((layer.real, real), (layer.imag, imag)):
        assert_rel_close(mine.running_mean, theirs.running_mean)
        assert_rel_close(mine.running_var, theirs.running_var)
        assert mine.num_batches_tracked.item() == theirs.num_batches_tracked.item() == 3
    layer.eval(), real.eval(), imag.eval()
    x = to_frequency(torch.randn(2, 4, 5, 5, **DOUBLE))
    assert_rel_close(layer(x).real, real(x.real))
    assert_rel_close(layer(x).imag, imag(x.imag))
    assert not torch.allclose(layer.real.running_mean, layer.imag.running_mean)


def test_batch_norm_statistics_are_stable_for_large_means():
    # Means far above the spread: the layer centres first (two passes, as PyTorch's own), so no
    # cancellation in float32, forward or backward.
    x = torch.complex(torch.randn(8, 3, 6, 6) + 1e4, torch.randn(8, 3, 6, 6) - 1e4).requires_grad_()
    layer, reference = cnn.SpectralBatchNorm2d(3), nn.BatchNorm2d(3)
    out, expected = layer(x), reference(x.real.detach().requires_grad_())
    torch.testing.assert_close(out.real, expected, rtol=0, atol=1e-2)
    assert abs(out.imag.std().item() - 1) < 0.01
    upstream = torch.randn_like(expected)
    (grad,) = torch.autograd.grad(out.real, layer.real.weight, upstream)
    torch.testing.assert_close(grad, torch.autograd.grad(expected, reference.weight, upstream)[0], rtol=1e-3, atol=1e-3)


def test_batch_norm_follows_the_input_memory_layout():
    layer = cnn.SpectralBatchNorm2d(3).double()
    nn.init.normal_(layer.real.weight), nn.init.normal_(layer.imag.bias)
    x = torch.randn(4, 3, 5, 6, dtype=torch.complex128)
    channels_last = x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2).requires_grad_()  # same values
    contiguous = x.clone().requires_grad_()
    every_other = torch.stack([x, x], -1).flatten(-2)[..., ::2].requires_grad_()  # not dense: standard order
    inputs = (channels_last, every_other, contiguous)
    outputs = [layer(inp) for inp in inputs]
    assert outputs[0].stride() == channels_last.stride()  # no transposing copy on the way out
    upstream = torch.randn_like(outputs[-1])
    grads = [torch.autograd.grad(out, inp, upstream)[0] for out, inp in zip(outputs, inputs)]
    for out, grad in zip(outputs[:-1], grads[:-1]):
        torch.testing.assert_close(out, outputs[-1], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(grad, grads[-1], rtol=1e-12, atol=1e-12)
    assert SF.normal_like(torch.view_as_real(channels_last)).stride() == torch.view_as_real(channels_last).stride()


def test_functional_batch_norm_matches_the_layer():
    # The functional form keeps (C, 2) running statistics; the layer keeps them in its two BatchNorm2d.
    layer = cnn.SpectralBatchNorm2d(3, momentum=0.3).double()
    for bn in (layer.real, layer.imag):
        nn.init.normal_(bn.weight), nn.init.normal_(bn.bias), nn.init.normal_(bn.running_mean)

    def stacked(name):
        return torch.stack([getattr(layer.real, name), getattr(layer.imag, name)], 1).detach().clone()

    weight, bias, running_mean, running_var = (stacked(name) for name in ("weight", "bias", "running_mean", "running_var"))
    x = torch.randn(5, 3, 4, 6, dtype=torch.complex128) + 3
    out = SF.spectral_batch_norm(x, running_mean, running_var, weight, bias, True, 0.3)
    torch.testing.assert_close(out, layer(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(running_mean, stacked("running_mean"), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(running_var, stacked("running_var"), rtol=1e-12, atol=1e-12)
    evaluated = SF.spectral_batch_norm(x, running_mean, running_var, weight, bias, training=False)
    torch.testing.assert_close(evaluated, layer.eval()(x), rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match="running statistics"):
        SF.spectral_batch_norm(x, None, None, weight, bias, training=False)


def test_gradcheck_batch_norm():
    layer = cnn.SpectralBatchNorm2d(2).double()
    # A generic complex input: the spectrum of a real map would be Hermitian.
    x = torch.randn(4, 2, 6, 6, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


@pytest.mark.parametrize("mean_ratio", [-1.0, float("inf")])  # centred first / one pass
def test_batch_norm_input_gradient_equals_two_batch_norms(mean_ratio, monkeypatch):
    """The input's gradient, the one the layers below learn from, against nn.BatchNorm2d on each part."""
    monkeypatch.setattr(_norm, "ONE_PASS_MAX_MEAN_RATIO", mean_ratio)
    layer = cnn.SpectralBatchNorm2d(3).double()
    for bn in (layer.real, layer.imag):
        nn.init.normal_(bn.weight), nn.init.normal_(bn.bias)
    real, imag = nn.BatchNorm2d(3).double(), nn.BatchNorm2d(3).double()
    real.load_state_dict(layer.real.state_dict()), imag.load_state_dict(layer.imag.state_dict())
    x = (torch.randn(5, 3, 4, 6, dtype=torch.complex128) + 2 - 1j).requires_grad_()
    upstream = torch.randn(5, 3, 4, 6, dtype=torch.complex128)
    (grad,) = torch.autograd.grad(torch.view_as_real(layer(x)), x, torch.view_as_real(upstream))
    parts = x.real.detach().requires_grad_(), x.imag.detach().requires_grad_()
    expected = [torch.autograd.grad(bn(part), part, up)[0]
                for bn, part, up in zip((real, imag), parts, (upstream.real, upstream.imag))]
    assert_rel_close(grad.real, expected[0])
    assert_rel_close(grad.imag, expected[1])
