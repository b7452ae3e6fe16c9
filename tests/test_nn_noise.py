"""cemnet.nn.noise: the approximated dropout and Leaky ReLU, their law, and the fused noise runs."""

import pytest
import torch
from conftest import DOUBLE
from torch import nn

from cemnet import nn as cnn
from cemnet.nn import functional as SF
from cemnet.nn.functional import _kernels
from cemnet.spectral import to_frequency

NOISE_LAYERS = [  # built inside each test, under its kernel setting
    (lambda: cnn.SpectralDropout(0.5), 0.25),
    (lambda: cnn.SpectralLeakyReLU(0.5), 0.125),
    (lambda: cnn.SpectralLeakyReLU(0.6, sigma=0.1), 0.1),
]


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])  # the native kernel draws float32 only
@pytest.mark.parametrize("layer,sigma", NOISE_LAYERS)
def test_noise_layers(layer, sigma, dtype, kernels):
    x = torch.full((64, 8, 16, 16), 1 + 1j, dtype=dtype)
    layer = layer().train()
    assert layer.kernels.name == kernels
    first, second = layer(x), layer(x)
    assert not torch.equal(first, second)
    for part in (first.real, first.imag):
        assert part.mean().item() == pytest.approx(1.0, abs=0.01)
        assert part.std().item() == pytest.approx(sigma, rel=0.05)
    correlation = torch.corrcoef(torch.stack([first.real.flatten(), first.imag.flatten()]))[0, 1]
    assert abs(correlation.item()) < 0.02  # real and imaginary draws are independent
    layer.eval()
    assert torch.equal(layer(x), x)


def test_leaky_relu_noise_can_stay_active_in_eval():
    layer = cnn.SpectralLeakyReLU(0.5, sigma=0.5 / 6, active_in_eval=True).eval()
    x = torch.ones(100, dtype=torch.complex64)
    assert not torch.equal(layer(x), x)
    assert "active_in_eval=True" in repr(layer)


def test_invalid_dropout_rate():
    with pytest.raises(ValueError, match=r"\[0, 1\), got 1.5"):
        cnn.SpectralDropout(1.5)


def test_gradcheck_noise_with_fixed_draws():
    x = to_frequency(torch.randn(2, 2, 4, 4, **DOUBLE)).requires_grad_()

    def noisy(inp):
        torch.manual_seed(1)  # the same draws on every call, so the map is deterministic
        return cnn.functional.multiplicative_noise(inp, 0.3)

    assert torch.autograd.gradcheck(noisy, (x,))


@pytest.mark.parametrize("parallel", [False, True])
def test_normal_like_law_and_reproducibility(parallel, monkeypatch):
    if parallel:
        monkeypatch.setattr(_kernels, "PARALLEL_NORMAL_MIN_NUMEL", 1)
        monkeypatch.setattr(torch, "get_num_threads", lambda: 3)  # three streams, whatever the machine
    like = torch.empty(200_001)
    torch.manual_seed(5)
    draws = SF.normal_like(like, 1.0, 0.25)
    torch.manual_seed(5)
    torch.testing.assert_close(SF.normal_like(like, 1.0, 0.25), draws, rtol=0, atol=0)  # the seed decides all
    assert not torch.equal(SF.normal_like(like, 1.0, 0.25), draws)  # fresh draws on every call
    assert abs(draws.mean().item() - 1.0) < 0.005 and abs(draws.std().item() - 0.25) < 0.005
    first, second, third = draws.chunk(3)
    n = len(third)
    assert abs(torch.corrcoef(torch.stack([first[:n], second[:n]]))[0, 1].item()) < 0.02  # independent streams
    assert not torch.equal(first[:n], second[:n])


def _noise_stack(container):
    return container(cnn.SpectralLeakyReLU(0.5), cnn.SpectralDropout(0.5), cnn.SpectralMaxPool2d(2),
                     cnn.SpectralDropout(0.2))


@pytest.mark.parametrize("parallel", [False, True])
def test_spectral_sequential_fuses_noise_runs_into_one_saved_factor(parallel, monkeypatch):
    if parallel:
        monkeypatch.setattr(_kernels, "PARALLEL_NORMAL_MIN_NUMEL", 1)
    fused, plain = _noise_stack(cnn.SpectralSequential), _noise_stack(nn.Sequential)
    x = to_frequency(torch.randn(4, 3, 8, 8, **DOUBLE)).requires_grad_()
    outputs, grads, saved = [], [], []
    for model in (fused, plain):
        torch.manual_seed(3)
        count = [0]

        def pack(tensor, count=count):
            count[0] += tensor.numel()
            return tensor

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            out = model(x)
        outputs.append(out)
        grads.append(torch.autograd.grad(out.abs().sum(), x)[0])
        saved.append(count[0])
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-12, atol=1e-12)  # the same draws, in order
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-12, atol=1e-12)
    assert saved[1] - saved[0] == 4 * 3 * 8 * 8 * 2  # one (B, C, H, W, 2) factor fewer
    assert not torch.equal(fused(x), outputs[0])  # still fresh draws on every call


def test_spectral_sequential_respects_eval_mode_and_hooks():
    fused = _noise_stack(cnn.SpectralSequential)
    x = to_frequency(torch.randn(2, 3, 8, 8, **DOUBLE))
    torch.testing.assert_close(fused.eval()(x), fused[2](x))  # only the pool acts in eval mode
    fused[0].active_in_eval = True
    torch.manual_seed(0)
    expected = fused[2](cnn.functional.multiplicative_noise(x, fused[0].sigma))
    torch.manual_seed(0)
    torch.testing.assert_close(fused(x), expected)
    calls = []
    fused[1].register_forward_hook(lambda module, args, out: calls.append(module))
    fused.train()(x)
    assert calls == [fused[1]]  # a hooked layer runs on its own
