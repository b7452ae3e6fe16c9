"""The half-spectrum (rfft2) fast variant against the faithful full-spectrum path."""

import pytest
import torch
import torch.nn.functional as F

from cemnet import nn as cnn
from cemnet.models import count_parameters, create_model
from cemnet.spectral import to_frequency, to_spatial

DOUBLE = {"dtype": torch.float64}


@pytest.mark.parametrize("size", [(8, 8), (7, 10), (9, 9)])
@pytest.mark.parametrize("storage", cnn.STORAGES)
def test_half_exact_layer_is_circular_conv2d(size, storage):
    x = torch.randn(3, 2, *size, **DOUBLE, requires_grad=True)
    kernel = torch.randn(4, 2, 3, 3, **DOUBLE)
    layer = cnn.SpectralConv2d(2, 4, 3, size, conj="weight", storage=storage, half=True, **DOUBLE)
    layer.set_spatial_kernel(kernel)
    out = to_spatial(layer(to_frequency(x, half=True)), layer.grid)
    expected = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="circular"), kernel)
    torch.testing.assert_close(out, expected, rtol=1e-10, atol=1e-10)
    upstream = torch.randn_like(expected)
    torch.testing.assert_close(torch.autograd.grad(out, x, upstream)[0], torch.autograd.grad(expected, x, upstream)[0],
                               rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("conj", ["input", "weight"])
def test_half_and_full_layers_agree_on_real_signals(conj):
    full = cnn.SpectralConv2d(3, 5, 5, (12, 11), conj=conj, bias=True, **DOUBLE)
    half = cnn.SpectralConv2d(3, 5, 5, (12, 11), conj=conj, bias=True, half=True, **DOUBLE)
    half.load_state_dict(full.state_dict())
    torch.nn.init.normal_(full.bias)
    half.bias.data.copy_(full.bias.data)
    x = torch.randn(2, 3, 12, 11, **DOUBLE)
    torch.testing.assert_close(to_spatial(half(to_frequency(x, half=True)), half.grid), to_spatial(full(to_frequency(x))),
                               rtol=1e-10, atol=1e-10)


def test_half_weight_fixation_keeps_the_support():
    layer = cnn.SpectralConv2d(2, 3, 3, (8, 7), storage="frequency", half=True, **DOUBLE)
    assert layer.weight.shape == (8, 4, 2, 2, 3)  # frequency-major (H, W // 2 + 1, 2, C_in, C_out)
    with torch.no_grad():
        layer.weight.add_(torch.randn_like(layer.weight))
    layer.fix_weights()
    kernel = torch.fft.irfft2(layer.spectrum().detach(), s=(8, 7))
    mask = torch.ones(8, 7, dtype=torch.bool)
    mask[:3, :3] = False
    assert kernel[..., mask].abs().max() < 1e-12
    fixed = layer.weight.detach().clone()
    layer.fix_weights()
    torch.testing.assert_close(layer.weight.detach(), fixed)
    torch.testing.assert_close(layer.spatial_kernel(), kernel[..., :3, :3])


@pytest.mark.parametrize("size", [(8, 8), (14, 14), (7, 9)])
def test_half_max_pool(size):
    x = torch.randn(2, 3, *size, **DOUBLE)
    layer = cnn.SpectralMaxPool2d(2, size, half=True)
    out = layer(to_frequency(x, half=True))
    pooled = F.max_pool2d(x, 2)
    torch.testing.assert_close(to_spatial(out, layer.grid.pooled(2)), pooled)
    with pytest.raises(ValueError, match="half-spectrum SpectralMaxPool2d needs"):
        cnn.SpectralMaxPool2d(2, half=True)
    with pytest.raises(ValueError, match=r"expected half spectrum"):
        layer(to_frequency(x))  # a full spectrum where a half one belongs


@pytest.mark.parametrize("name", ["cemnet-mnist", "cemnet-small"])
def test_half_spectrum_models(name):
    full, half = create_model(name), create_model(name, half_spectrum=True)
    spec = half.spec
    x = torch.randn(4, spec.in_channels, spec.image_size, spec.image_size)
    logits = half(x)
    assert logits.shape == (4, 10)
    logits.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in half.parameters())
    assert count_parameters(half) < count_parameters(full)
