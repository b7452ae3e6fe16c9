"""cemnet.nn.conv: the element-wise multiplication layer against conv2d, its storages, Weight Fixation, its checks."""

import pytest
import torch
import torch.nn.functional as F
from conftest import DOUBLE, assert_rel_close
from torch import nn

from cemnet import nn as cnn
from cemnet import spectral
from cemnet.nn import functional as SF
from cemnet.spectral import SpectralGrid, to_frequency, to_spatial

CASES = [  # (c_in, c_out, k, (H, W))
    (1, 1, 1, (5, 5)),
    (3, 4, 3, (8, 8)),
    (2, 5, 3, (7, 10)),
    (4, 2, 5, (12, 9)),
    (6, 16, 5, (14, 14)),
    (1, 6, 5, (10, 9)),  # one input channel: the broadcast path
]


def spatial_conv(x, kernel):
    """The reference: PyTorch's cross-correlation with circular "same" padding."""
    k = kernel.shape[-1]
    return F.conv2d(F.pad(x, (k // 2,) * 4, mode="circular"), kernel)


@pytest.mark.parametrize("c_in,c_out,k,size", CASES)
@pytest.mark.parametrize("storage", cnn.STORAGES)
def test_exact_convention_equals_circular_conv2d(c_in, c_out, k, size, storage):
    x = torch.randn(3, c_in, *size, **DOUBLE, requires_grad=True)
    kernel = torch.randn(c_out, c_in, k, k, **DOUBLE, requires_grad=True)
    layer = cnn.SpectralConv2d(c_in, c_out, k, size, conj="weight", storage=storage, **DOUBLE)
    layer.set_spatial_kernel(kernel.detach())
    out = to_spatial(layer(to_frequency(x)))
    expected = spatial_conv(x, kernel)
    assert_rel_close(out, expected)

    upstream = torch.randn_like(expected)
    (grad_x,) = torch.autograd.grad(out, x, upstream)
    grad_x_ref, grad_k_ref = torch.autograd.grad(expected, (x, kernel), upstream)
    assert_rel_close(grad_x, grad_x_ref)
    if storage == "spatial":
        (grad_k,) = torch.autograd.grad(to_spatial(layer(to_frequency(x))), layer.weight, upstream)
        assert_rel_close(grad_k, grad_k_ref)


@pytest.mark.parametrize("c_in,c_out,k,size", CASES)
def test_paper_convention_is_the_index_reversed_exact_result(c_in, c_out, k, size):
    x = to_frequency(torch.randn(2, c_in, *size, **DOUBLE))
    paper = cnn.SpectralConv2d(c_in, c_out, k, size, conj="input", **DOUBLE)
    exact = cnn.SpectralConv2d(c_in, c_out, k, size, conj="weight", anchor="corner", **DOUBLE)
    exact.load_state_dict(paper.state_dict())
    reversed_exact = torch.roll(torch.flip(to_spatial(exact(x)), dims=(-2, -1)), shifts=(1, 1), dims=(-2, -1))
    assert_rel_close(to_spatial(paper(x)), reversed_exact)
    # The corner-anchored exact layer is conv2d anchored top-left: circular padding bottom/right.
    spatial = to_spatial(x)
    anchored = F.conv2d(F.pad(spatial, (0, k - 1, 0, k - 1), mode="circular"), exact.weight)
    assert_rel_close(to_spatial(exact(x)), anchored)


def test_bias_is_a_spatial_offset():
    layer = cnn.SpectralConv2d(2, 3, 3, 6, conj="weight", bias=True, **DOUBLE)
    nn.init.normal_(layer.bias)
    x = torch.randn(2, 2, 6, 6, **DOUBLE)
    expected = spatial_conv(x, layer.weight) + layer.bias[:, None, None]
    assert_rel_close(to_spatial(layer(to_frequency(x))), expected.detach())


def test_from_conv2d_builds_the_exact_twin():
    conv = nn.Conv2d(3, 5, 3, padding=1, padding_mode="circular", **DOUBLE)
    layer = cnn.SpectralConv2d.from_conv2d(conv, (9, 7))
    x = torch.randn(2, 3, 9, 7, **DOUBLE)
    assert_rel_close(to_spatial(layer(to_frequency(x))), conv(x).detach())
    with pytest.raises(ValueError, match="stride 1"):
        cnn.SpectralConv2d.from_conv2d(nn.Conv2d(3, 5, 3, stride=2, padding=1), 8)


@pytest.mark.parametrize("storage", cnn.STORAGES)
def test_spatial_kernel_round_trip(storage):
    layer = cnn.SpectralConv2d(2, 3, 3, 8, storage=storage, **DOUBLE)
    kernel = torch.randn(3, 2, 3, 3, **DOUBLE)
    layer.set_spatial_kernel(kernel)
    assert_rel_close(layer.spatial_kernel(), kernel)


def test_weight_fixation_after_rmsprop_step_keeps_the_support():
    layer = cnn.SpectralConv2d(3, 4, 3, 8, storage="frequency", **DOUBLE)
    model = nn.Sequential(layer)
    optimizer = torch.optim.RMSprop(model.parameters(), lr=0.01)
    x = to_frequency(torch.randn(5, 3, 8, 8, **DOUBLE))
    to_spatial(model(x)).square().mean().backward()
    optimizer.step()

    def off_support(module):
        full = torch.fft.ifft2(module.spectrum().detach())
        mask = torch.ones(8, 8, dtype=torch.bool)
        mask[:3, :3] = False
        return full[..., mask].abs().max().item()

    assert off_support(layer) > 1e-3  # RMSprop's per-frequency step leaves the support
    assert cnn.apply_weight_fixation(model) == 1
    assert off_support(layer) < 1e-12
    fixed = layer.weight.detach().clone()
    cnn.apply_weight_fixation(model)
    torch.testing.assert_close(layer.weight.detach(), fixed, rtol=0, atol=1e-14)


def test_real_kernel_weight_fixation():
    layer = cnn.SpectralConv2d(2, 2, 3, 6, storage="frequency", **DOUBLE)
    with torch.no_grad():
        layer.weight.add_(torch.randn_like(layer.weight))
    layer.fix_weights(real_kernel=True)
    kernel = torch.fft.ifft2(layer.spectrum().detach())
    assert kernel.imag.abs().max() < 1e-12


@pytest.mark.parametrize("storage", ["spatial", "free"])
def test_weight_fixation_is_refused_where_it_does_not_apply(storage):
    layer = cnn.SpectralConv2d(2, 2, 3, 6, storage=storage)
    with pytest.raises(ValueError, match="storage 'frequency'"):
        layer.fix_weights()
    assert cnn.apply_weight_fixation(nn.Sequential(layer)) == 0


@pytest.mark.parametrize("half,real_kernel", [(False, False), (False, True), (True, False)])
@pytest.mark.parametrize("k,size,anchor", [(3, (8, 7), "corner"), (5, (6, 6), "center"), (3, (2, 2), "corner")])
def test_weight_fixation_equals_project_to_support(half, real_kernel, k, size, anchor):
    layer = cnn.SpectralConv2d(2, 3, k, size, conj="input", storage="frequency", anchor=anchor, half=half, **DOUBLE)
    with torch.no_grad():
        layer.weight.add_(torch.randn_like(layer.weight))
    expected = spectral.project_to_support(layer.spectrum().detach(), k, layer.grid, anchor, real_kernel)
    layer.fix_weights(real_kernel)
    torch.testing.assert_close(layer.spectrum().detach(), expected, rtol=1e-12, atol=1e-12)


def test_constructor_validation():
    with pytest.raises(ValueError, match=r"conj must be one of \['input', 'weight'\], got 'both'"):
        cnn.SpectralConv2d(1, 1, 3, 8, conj="both")
    with pytest.raises(ValueError, match="storage must be one of"):
        cnn.SpectralConv2d(1, 1, 3, 8, storage="disk")
    with pytest.raises(ValueError, match="must be positive"):
        cnn.SpectralConv2d(0, 1, 3, 8)


def test_forward_validation_names_expected_and_got():
    layer = cnn.SpectralConv2d(3, 4, 3, 8)
    with pytest.raises(ValueError, match=r"expected 3 input channels, got 2"):
        layer(to_frequency(torch.randn(1, 2, 8, 8)))
    with pytest.raises(ValueError, match=r"expected spatial size \(8, 8\), got \(9, 9\)"):
        layer(to_frequency(torch.randn(1, 3, 9, 9)))
    with pytest.raises(ValueError, match="complex"):
        layer(torch.randn(1, 3, 8, 8))
    with pytest.raises(ValueError, match="4D"):
        layer(to_frequency(torch.randn(3, 8, 8)))


def test_extra_repr_shows_non_defaults():
    text = repr(cnn.SpectralConv2d(3, 4, 3, 8, conj="weight", anchor="corner", bias=True))
    assert "conj='weight'" in text and "anchor='corner'" in text and "bias=True" in text
    assert "anchor" not in repr(cnn.SpectralConv2d(3, 4, 3, 8))


@pytest.mark.parametrize("conj", ["input", "weight"])
@pytest.mark.parametrize("storage", cnn.STORAGES)
def test_gradcheck_conv(conj, storage):
    layer = cnn.SpectralConv2d(2, 3, 3, (5, 4), conj=conj, storage=storage, bias=True, **DOUBLE)
    x = to_frequency(torch.randn(2, 2, 5, 4, **DOUBLE)).requires_grad_()
    assert torch.autograd.gradcheck(layer, (x,))
    weight = layer.weight.detach().clone().requires_grad_()

    def as_function_of_weight(w):
        return torch.func.functional_call(layer, {"weight": w, "bias": layer.bias}, (x.detach(),))

    assert torch.autograd.gradcheck(as_function_of_weight, (weight,))


@pytest.mark.parametrize("conj", ["input", "weight"])
def test_conv_backward_can_be_differentiated_again(conj):
    layer = cnn.SpectralConv2d(2, 3, 3, (4, 4), conj=conj, storage="frequency", **DOUBLE)
    x = to_frequency(torch.randn(2, 2, 4, 4, **DOUBLE)).requires_grad_()
    weight = layer.weight.detach().clone().requires_grad_()

    def conv(x, w):
        return torch.func.functional_call(layer, {"weight": w}, (x,))

    assert torch.autograd.gradgradcheck(conv, (x, weight))


def test_conv_keeps_its_input_not_the_doubled_left_factor():
    # The product's backward rebuilds the (H F, 2 B, 2 C_in) left factor from the input it
    # keeps: autograd holds the input and the weight (a view of the parameter), nothing of
    # twice the input's size (memory, docs/performance.md).
    layer = cnn.SpectralConv2d(4, 8, 3, (6, 6), storage="frequency")
    x = to_frequency(torch.randn(5, 4, 6, 6)).requires_grad_()
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel() * t.element_size()) or t,
                                                  lambda t: t):
        out = layer(x)
    assert sorted(saved) == sorted([x.numel() * x.element_size(), layer.weight.numel() * layer.weight.element_size()])
    out.abs().sum().backward()  # and the gradients still arrive
    assert x.grad is not None and layer.weight.grad is not None


def test_frequency_major_layout_round_trips_and_both_weight_layouts_agree():
    weight = torch.randn(4, 3, 6, 5, dtype=torch.complex128)
    packed = SF.frequency_major(weight)
    assert packed.shape == (6, 5, 2, 3, 4)
    assert packed[2, 1, 1, 0, 3] == weight[3, 0, 2, 1].imag
    torch.testing.assert_close(SF.from_frequency_major(packed.contiguous()), weight)
    x = to_frequency(torch.randn(2, 3, 6, 5, **DOUBLE))
    torch.testing.assert_close(SF.spectral_conv2d(x, weight), SF.spectral_conv2d(x, packed.contiguous()))


@pytest.mark.parametrize("conj", ["input", "weight"])
@pytest.mark.parametrize("half", [False, True])
def test_single_input_channel_path_equals_the_matrix_path(conj, half):
    # A zero second input channel sends the same product through the batched-matmul path.
    x = to_frequency(torch.randn(3, 1, 6, 7, **DOUBLE), half=half).requires_grad_()
    weight = torch.randn(4, 2, 6, 4 if half else 7, dtype=torch.complex128, requires_grad=True)
    bias = torch.randn(4, **DOUBLE)
    grid = SpectralGrid(6, 7, half)
    broadcast = SF.spectral_conv2d(x, weight[:, :1], bias, conj, grid)
    matrix = SF.spectral_conv2d(torch.cat([x, torch.zeros_like(x)], 1), weight, bias, conj, grid)
    torch.testing.assert_close(broadcast, matrix, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(broadcast)
    grads = torch.autograd.grad(broadcast, (x, weight), upstream)
    expected = torch.autograd.grad(matrix, (x, weight), upstream)
    torch.testing.assert_close(grads[0], expected[0])
    torch.testing.assert_close(grads[1][:, :1], expected[1][:, :1])


def test_a_spatial_sgd_step_is_hw_times_the_fixed_frequency_step():
    """With the unnormalised FFT the two storages follow different SGD trajectories (docs/deviations.md)."""
    kernel = torch.randn(3, 2, 3, 3, **DOUBLE)
    layers = [cnn.SpectralConv2d(2, 3, 3, (8, 8), storage=storage, **DOUBLE) for storage in ("spatial", "frequency")]
    x, target = to_frequency(torch.randn(4, 2, 8, 8, **DOUBLE)), torch.randn(4, 3, 8, 8, **DOUBLE)
    for layer in layers:
        layer.set_spatial_kernel(kernel)
        (to_spatial(layer(x)) - target).square().sum().backward()
        with torch.no_grad():
            layer.weight -= 1e-3 * layer.weight.grad
    layers[1].fix_weights()  # the paper's projection after the step
    spatial_step, frequency_step = (layer.spatial_kernel() - kernel for layer in layers)
    assert_rel_close(spatial_step, 8 * 8 * frequency_step, rel=1e-8)


def off_support(layer: cnn.SpectralConv2d) -> float:
    """How far a frequency weight is from its K x K support, relative to its size."""
    spectrum = layer.spectrum()
    projected = spectral.project_to_support(spectrum, layer.kernel_size, layer.grid, layer.anchor)
    return ((spectrum - projected).abs().max() / spectrum.abs().max()).item()


@pytest.mark.parametrize("fixation", cnn.FIXATIONS)
@pytest.mark.parametrize("half", [False, True])
def test_a_plain_pytorch_loop_keeps_every_fixed_layer_on_its_support(fixation, half):
    # No cemnet training code: the loop a user writes. The layers fix themselves.
    model = nn.Sequential(
        cnn.ToFrequency(half),
        cnn.SpectralConv2d(2, 4, 3, 8, storage="frequency", fixation=fixation, half=half, **DOUBLE),
        cnn.SpectralConv2d(4, 3, 5, 8, storage="frequency", fixation=fixation, half=half, **DOUBLE),
        cnn.SpectralConv2d(3, 2, 3, 8, storage="free", half=half, **DOUBLE),
    )
    optimizer = torch.optim.RMSprop(model.parameters(), lr=0.01)
    x, target = torch.randn(4, 2, 8, 8, **DOUBLE), torch.randn(4, 2, 8, 8, **DOUBLE)
    losses = []
    for _ in range(10):
        optimizer.zero_grad()
        loss = (model[3].grid.to_spatial(model(x)) - target).pow(2).mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert off_support(model[1]) > 1e-3  # stepped since its last forward: not fixed yet ...
    model(x)  # ... until the model runs
    assert off_support(model[1]) < 1e-12 and off_support(model[2]) < 1e-12
    assert off_support(model[3]) > 1e-3  # "free": the ablation without fixation stays free
    optimizer.step()
    state = model.state_dict()  # a checkpoint written right after a step holds fixed weights
    assert off_support(model[1]) < 1e-12
    restored = cnn.SpectralConv2d(2, 4, 3, 8, storage="frequency", half=half, **DOUBLE)
    restored.load_state_dict({"weight": state["1.weight"]})
    version = restored.weight._version
    restored(model[0](x))
    assert restored.weight._version == version  # a loaded weight counts as fixed: resumed runs stay bit-exact


def test_explicit_fixation_after_the_step_leaves_the_forward_nothing_to_do():
    layer = cnn.SpectralConv2d(3, 4, 3, 8, storage="frequency", **DOUBLE)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    x = to_frequency(torch.randn(2, 3, 8, 8, **DOUBLE))
    layer(x).abs().sum().backward()
    optimizer.step()
    cnn.apply_weight_fixation(layer)
    fixed = layer.weight.detach().clone()
    layer(x)
    assert torch.equal(layer.weight, fixed)  # not projected twice: cemnet train's numbers are unchanged


def test_gradient_fixation_hands_the_optimizer_a_gradient_on_the_support():
    weights = cnn.SpectralConv2d(3, 4, 3, 8, storage="frequency", **DOUBLE)
    gradient = cnn.SpectralConv2d(3, 4, 3, 8, storage="frequency", fixation="gradient", **DOUBLE)
    gradient.load_state_dict(weights.state_dict())
    x = to_frequency(torch.randn(2, 3, 8, 8, **DOUBLE))
    for layer in (weights, gradient):
        to_spatial(layer(x)).pow(2).sum().backward()
    grad = SF.from_frequency_major(gradient.weight.grad)
    projected = spectral.project_to_support(SF.from_frequency_major(weights.weight.grad), 3, gradient.grid,
                                            gradient.anchor)
    assert_rel_close(grad, projected)
    assert not torch.allclose(weights.weight.grad, gradient.weight.grad)  # the plain gradient leaves the support
    assert "fixation='gradient'" in repr(gradient)
    with pytest.raises(ValueError, match="fixation must be one of"):
        cnn.SpectralConv2d(3, 4, 3, 8, storage="frequency", fixation="sometimes")
