import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cemnet import nn as cnn
from cemnet import spectral
from cemnet.nn import functional as SF
from cemnet.spectral import to_frequency, to_spatial

DOUBLE = {"dtype": torch.float64}


def assert_rel_close(actual, expected, rel=1e-10):
    """Relative exactness: the error is measured against the size of the expected tensor."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=rel, atol=rel * max(scale, 1e-30))


def spatial_conv(x, kernel):
    """The reference: PyTorch's cross-correlation with circular "same" padding."""
    k = kernel.shape[-1]
    return F.conv2d(F.pad(x, (k // 2,) * 4, mode="circular"), kernel)


CASES = [  # (c_in, c_out, k, (H, W))
    (1, 1, 1, (5, 5)),
    (3, 4, 3, (8, 8)),
    (2, 5, 3, (7, 10)),
    (4, 2, 5, (12, 9)),
    (6, 16, 5, (14, 14)),
    (1, 6, 5, (10, 9)),  # one input channel: the broadcast path
]


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


@pytest.mark.parametrize("momentum", [0.1, None])
@pytest.mark.parametrize("mean_ratio", [-1.0, float("inf")])  # always centre first / always one pass
def test_batch_norm_equals_two_batch_norms(momentum, mean_ratio, monkeypatch):
    monkeypatch.setattr(SF, "ONE_PASS_MAX_MEAN_RATIO", mean_ratio)
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


NOISE_LAYERS = [
    (cnn.SpectralDropout(0.5), 0.25),
    (cnn.SpectralLeakyReLU(0.5), 0.125),
    (cnn.SpectralLeakyReLU(0.6, sigma=0.1), 0.1),
]


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])  # the native kernel draws float32 only
@pytest.mark.parametrize("layer,sigma", NOISE_LAYERS)
def test_noise_layers(layer, sigma, dtype, native_backend):
    x = torch.full((64, 8, 16, 16), 1 + 1j, dtype=dtype)
    layer.train()
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


@pytest.mark.parametrize("size", [(8, 8), (7, 10)])
def test_max_pool_equals_spatial_max_pool(size):
    x = torch.randn(3, 4, *size, **DOUBLE)
    out = cnn.SpectralMaxPool2d(2)(to_frequency(x))
    assert_rel_close(to_spatial(out), F.max_pool2d(x, 2))
    assert out.is_complex()


@pytest.mark.parametrize("size,factor", [((8, 8), 2), ((14, 14), 2), ((6, 10), 2), ((12, 9), 3)])
def test_truncation_is_the_spectrum_of_the_subsampled_band_limited_signal(size, factor):
    """For a signal whose spectrum lies on the kept frequencies, truncation = k^2 fft2(x[::k, ::k]) (no aliasing)."""
    height, width = size
    rows = SF.kept_frequencies(height, height // factor)
    columns = SF.kept_frequencies(width, width // factor)
    spectrum = torch.zeros(2, 3, height, width, dtype=torch.complex128)
    spectrum[..., rows[:, None], columns] = torch.randn(2, 3, len(rows), len(columns), dtype=torch.complex128)
    signal = torch.fft.ifft2(spectrum)
    out = cnn.SpectralTruncation2d(factor)(spectrum)
    assert out.shape == (2, 3, height // factor, width // factor)
    subsampled = signal[..., ::factor, ::factor][..., : height // factor, : width // factor]
    torch.testing.assert_close(out, factor**2 * torch.fft.fft2(subsampled))
    assert sorted(rows.tolist()) == sorted({k % height for k in range(-(height // factor // 2), (height // factor + 1) // 2)})
    x = spectrum.clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda t: SF.spectral_truncate2d(t, factor), (x,))
    with pytest.raises(ValueError, match="complex"):
        cnn.SpectralTruncation2d()(signal.real)


@pytest.mark.parametrize("shape", [(3, 4, 8, 8), (2, 3, 7, 9), (5, 6, 6), (2, 16, 28, 28)])
def test_block_max_pool_equals_max_pool2d(shape):
    x = torch.randn(shape, **DOUBLE)
    x[..., :2, :2] = 1.5  # windows of ties
    x[..., 0, 3] = float("nan")
    with torch.no_grad():  # the fast path
        out = cnn.BlockMaxPool2d(2)(x)
    expected = F.max_pool2d(x, 2)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, rtol=0, atol=0, equal_nan=True)
    # With autograd it is F.max_pool2d, gradients included.
    ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
    upstream = torch.randn_like(expected)
    SF.block_max_pool2d(ours).backward(upstream)
    F.max_pool2d(theirs, 2).backward(upstream)
    assert torch.equal(ours.grad, theirs.grad)


def test_block_max_pool_other_kernels_and_repr():
    x = torch.randn(2, 3, 9, 9)
    with torch.no_grad():
        assert torch.equal(SF.block_max_pool2d(x, 3), F.max_pool2d(x, 3))
    assert "kernel_size=2" in repr(cnn.BlockMaxPool2d(2))


def test_uniform_mask_dropout_has_the_law_of_dropout(native_backend):
    torch.manual_seed(0)
    x = torch.randn(1000, 1000).abs() + 0.5  # no zeros, so a zero output is a dropped number
    for p in (0.2, 0.5):
        layer = cnn.UniformMaskDropout(p).train()
        out = layer(x)
        kept = out != 0
        # binomial: the keep rate of 1e6 draws within 5 standard deviations of 1 - p
        assert abs(kept.double().mean().item() - (1 - p)) < 5 * (p * (1 - p) / x.numel()) ** 0.5
        torch.testing.assert_close(out[kept], x[kept] / (1 - p))  # kept numbers scaled as by nn.Dropout
        rows = kept.double().mean(1)  # independent draws: no row far from the rate either
        assert (rows - (1 - p)).abs().max() < 6 * (p * (1 - p) / 1000) ** 0.5
        assert "p=" + str(p) in repr(layer)


def test_uniform_mask_dropout_gradient_eval_and_edge_rates(native_backend):
    x = torch.randn(64, 32, requires_grad=True)
    torch.manual_seed(1)
    out = SF.uniform_mask_dropout(x, 0.5)
    out.backward(torch.ones_like(out))
    torch.testing.assert_close(x.grad, (out != 0).float() * 2.0)  # d out / d x is the factor
    torch.manual_seed(1)
    torch.testing.assert_close(SF.uniform_mask_dropout(x.detach(), 0.5), out.detach())  # seeded: the same mask
    layer = cnn.UniformMaskDropout(0.5)
    assert layer.eval()(x) is x and SF.uniform_mask_dropout(x, 0.0) is x
    dropped = SF.uniform_mask_dropout(x, 1.0)
    assert torch.equal(dropped, torch.zeros_like(x))  # no division by zero
    y = torch.randn(8, 8)
    assert SF.uniform_mask_dropout(y, 0.3, inplace=True) is y
    with pytest.raises(ValueError, match="between 0 and 1"):
        SF.uniform_mask_dropout(x, 1.5)
    assert isinstance(cnn.dropout_layer(0.5), nn.Dropout) and not isinstance(cnn.dropout_layer(0.5), cnn.UniformMaskDropout)
    assert isinstance(cnn.dropout_layer(0.5, "uniform"), cnn.UniformMaskDropout)
    with pytest.raises(ValueError, match="dropout_mask"):
        cnn.dropout_layer(0.5, "normal")


def test_two_branch_head_uses_each_part_separately():
    head = cnn.TwoBranchHead(12, (5,), 3).double().eval()
    x = to_frequency(torch.randn(4, 3, 2, 2, **DOUBLE))
    out = head(x)
    assert out.shape == (4, 3) and not out.is_complex()
    changed = torch.complex(x.real, x.imag + 1.0)
    with torch.no_grad():
        head.branches[0].weight[1].zero_()  # group 1: the imaginary branch
    torch.testing.assert_close(head(changed), head(x))  # a dead imaginary branch ignores the imaginary part


class _TwoMLPHead(nn.Module):
    """The head as two separate MLPs (the layout before the grouped one): the reference."""

    def __init__(self, in_features, hidden, num_classes, dropout):
        super().__init__()
        self.real = cnn.mlp_branch(in_features, hidden, 0.2, dropout, True)
        self.imag = cnn.mlp_branch(in_features, hidden, 0.2, dropout, True)
        self.classifier = nn.Linear(2 * hidden[-1], num_classes)

    def forward(self, x):
        return self.classifier(torch.cat([self.real(x.real.flatten(1)), self.imag(x.imag.flatten(1))], 1))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_grouped_head_equals_two_separate_branches(training, two_branch_layout):
    head = cnn.TwoBranchHead(12, (5, 4), 3, dropout=0.0).double()
    reference = _TwoMLPHead(12, (5, 4), 3, dropout=0.0).double()
    with torch.no_grad():  # statistics and affine parameters that differ between the branches
        for module in head.modules():
            if isinstance(module, nn.BatchNorm1d):
                module.running_mean.normal_(), module.running_var.uniform_(0.5, 2.0)
                module.weight.normal_(), module.bias.normal_()
    reference.load_state_dict(two_branch_layout(head.state_dict(), head))
    head.train(training), reference.train(training)
    x = torch.randn(6, 3, 2, 2, dtype=torch.complex128, requires_grad=True)
    out, expected = head(x), reference(x)
    assert_rel_close(out, expected)
    upstream = torch.randn_like(out)
    grad, weight_grad = torch.autograd.grad(out, (x, head.branches[0].weight), upstream)
    expected_grad, real_grad, imag_grad = torch.autograd.grad(
        expected, (x, reference.real[0].weight, reference.imag[0].weight), upstream)
    assert_rel_close(grad, expected_grad)
    assert_rel_close(weight_grad, torch.stack((real_grad, imag_grad)))
    for key, value in two_branch_layout(head.state_dict(), head).items():  # running statistics updated alike
        assert_rel_close(value.double(), reference.state_dict()[key].double())


def test_head_loads_two_branch_weights(two_branch_layout):
    head = cnn.TwoBranchHead(12, (5, 4), 3).double().eval()
    with torch.no_grad():
        for parameter in head.parameters():
            parameter.normal_()
    old = two_branch_layout(head.state_dict(), head)
    assert "real.0.weight" in old and "imag.1.running_var" in old
    fresh = cnn.TwoBranchHead(12, (5, 4), 3).double().eval()
    fresh.load_state_dict(old)
    x = torch.randn(4, 3, 2, 2, dtype=torch.complex128)
    torch.testing.assert_close(fresh(x), head(x))
    del old["imag.4.weight"]
    with pytest.raises(RuntimeError, match="real.4.weight"):  # an incomplete pair is reported, not guessed
        cnn.TwoBranchHead(12, (5, 4), 3).double().load_state_dict(old)


def test_grouped_linear_equals_linear_per_block():
    layer = cnn.GroupedLinear(6, 4, groups=2, **DOUBLE)
    blocks = [nn.Linear(3, 2, **DOUBLE) for _ in range(2)]
    with torch.no_grad():
        for index, block in enumerate(blocks):
            block.weight.copy_(layer.weight[index]), block.bias.copy_(layer.bias[index])
    x = torch.randn(5, 7, 6, **DOUBLE, requires_grad=True)  # leading dimensions, as nn.Linear takes them
    out = layer(x)
    expected = torch.cat([block(part) for block, part in zip(blocks, x.split(3, -1))], -1)
    assert_rel_close(out, expected)
    upstream = torch.randn_like(out)
    grads = torch.autograd.grad(out, (x, layer.weight, layer.bias), upstream)
    expected_grads = torch.autograd.grad(expected, (x, *blocks[1].parameters()), upstream)
    assert_rel_close(grads[0], expected_grads[0])
    assert_rel_close(grads[1][1], expected_grads[1])
    assert_rel_close(grads[2][1], expected_grads[2])
    assert torch.autograd.gradcheck(layer, (torch.randn(3, 6, **DOUBLE, requires_grad=True),))


def test_grouped_linear_initialisation_and_errors():
    layer = cnn.GroupedLinear(2 * 400, 2 * 300, groups=2, bias=False)
    bound = 1 / 400**0.5  # nn.Linear(400, 300)'s
    assert layer.bias is None and layer.weight.shape == (2, 300, 400)
    assert layer.weight.abs().max() <= bound and layer.weight.abs().max() > 0.9 * bound
    assert not torch.equal(layer.weight[0], layer.weight[1])  # independent blocks
    assert "groups=2" in repr(layer) and "bias=False" in repr(layer)
    with pytest.raises(ValueError, match="divisible"):
        cnn.GroupedLinear(5, 4, groups=2)
    with pytest.raises(ValueError, match="expected 800 input features"):
        layer(torch.randn(2, 799))


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


@pytest.mark.parametrize(
    "layer",
    [
        cnn.SpectralBatchNorm2d(2),
        cnn.SpectralMaxPool2d(2),
        cnn.TwoBranchHead(8, (4,), 3, dropout=0.0),
    ],
    ids=["batchnorm", "maxpool", "head"],
)
def test_gradcheck_other_layers(layer):
    layer = layer.double()
    # A generic complex input: the 2x2 spectrum of a real map would have no imaginary part.
    size = 2 if isinstance(layer, cnn.TwoBranchHead) else 6
    x = torch.randn(4, 2, size, size, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))


def test_gradcheck_noise_with_fixed_draws():
    x = to_frequency(torch.randn(2, 2, 4, 4, **DOUBLE)).requires_grad_()

    def noisy(inp):
        torch.manual_seed(1)  # the same draws on every call, so the map is deterministic
        return cnn.functional.multiplicative_noise(inp, 0.3)

    assert torch.autograd.gradcheck(noisy, (x,))


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
    size = (6, 7) if half else None
    broadcast = SF.spectral_conv2d(x, weight[:, :1], bias, conj, size)
    matrix = SF.spectral_conv2d(torch.cat([x, torch.zeros_like(x)], 1), weight, bias, conj, size)
    torch.testing.assert_close(broadcast, matrix, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(broadcast)
    grads = torch.autograd.grad(broadcast, (x, weight), upstream)
    expected = torch.autograd.grad(matrix, (x, weight), upstream)
    torch.testing.assert_close(grads[0], expected[0])
    torch.testing.assert_close(grads[1][:, :1], expected[1][:, :1])


@pytest.mark.parametrize("half,real_kernel", [(False, False), (False, True), (True, False)])
@pytest.mark.parametrize("k,size,anchor", [(3, (8, 7), "corner"), (5, (6, 6), "center"), (3, (2, 2), "corner")])
def test_weight_fixation_equals_project_to_support(half, real_kernel, k, size, anchor):
    layer = cnn.SpectralConv2d(2, 3, k, size, conj="input", storage="frequency", anchor=anchor, half=half, **DOUBLE)
    with torch.no_grad():
        layer.weight.add_(torch.randn_like(layer.weight))
    expected = spectral.project_to_support(layer.spectrum().detach(), k, anchor, real_kernel, size if half else None)
    layer.fix_weights(real_kernel)
    torch.testing.assert_close(layer.spectrum().detach(), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("parallel", [False, True])
def test_normal_like_law_and_reproducibility(parallel, monkeypatch):
    if parallel:
        monkeypatch.setattr(SF, "PARALLEL_NORMAL_MIN_NUMEL", 1)
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
        monkeypatch.setattr(SF, "PARALLEL_NORMAL_MIN_NUMEL", 1)
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
