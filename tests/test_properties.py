"""Property-based tests of the spectral layers over random shapes and sizes (hypothesis)."""

import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from cemnet import nn as cnn
from cemnet import spectral
from cemnet.spectral import to_frequency, to_spatial

shapes = st.tuples(
    st.integers(1, 3),  # batch
    st.integers(1, 4),  # in channels
    st.integers(1, 4),  # out channels
    st.sampled_from([1, 3, 5]),  # kernel
    st.integers(5, 12),  # height
    st.integers(5, 12),  # width
)
SETTINGS = settings(max_examples=30, deadline=None)


@SETTINGS
@given(shapes, st.integers(0, 2**31 - 1))
def test_exact_layer_is_circular_conv2d(shape, seed):
    batch, c_in, c_out, k, h, w = shape
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, c_in, h, w, dtype=torch.float64, generator=generator)
    kernel = torch.randn(c_out, c_in, k, k, dtype=torch.float64, generator=generator)
    layer = cnn.SpectralConv2d(c_in, c_out, k, (h, w), conj="weight", dtype=torch.float64)
    layer.set_spatial_kernel(kernel)
    expected = F.conv2d(F.pad(x, (k // 2,) * 4, mode="circular"), kernel)
    torch.testing.assert_close(to_spatial(layer(to_frequency(x))), expected, rtol=1e-9, atol=1e-9)


@SETTINGS
@given(shapes, st.sampled_from(spectral.ANCHORS), st.booleans())
def test_weight_fixation_is_an_idempotent_projection(shape, anchor, real_kernel):
    _, c_in, c_out, k, h, w = shape
    spectrum = torch.randn(c_out, c_in, h, w, dtype=torch.complex128)
    once = spectral.project_to_support(spectrum, k, anchor=anchor, real_kernel=real_kernel)
    torch.testing.assert_close(spectral.project_to_support(once, k, anchor=anchor, real_kernel=real_kernel), once)
    full = spectral.pad_kernel(spectral.crop_kernel(torch.fft.ifft2(once), k, anchor), (h, w), anchor)
    torch.testing.assert_close(torch.fft.ifft2(once), full)  # nothing outside the support


@SETTINGS
@given(shapes, st.sampled_from([2, 3]))
def test_max_pool_commutes_with_the_transform(shape, pool):
    batch, channels, _, _, h, w = shape
    x = torch.randn(batch, channels, h, w, dtype=torch.float64)
    out = cnn.SpectralMaxPool2d(pool)(to_frequency(x))
    torch.testing.assert_close(to_spatial(out), F.max_pool2d(x, pool))


@SETTINGS
@given(shapes, st.floats(0.0, 0.9))
def test_noise_layers_are_the_identity_in_eval(shape, p):
    batch, channels, _, _, h, w = shape
    x = to_frequency(torch.randn(batch, channels, h, w))
    for layer in (cnn.SpectralDropout(p), cnn.SpectralLeakyReLU(p)):
        assert torch.equal(layer.eval()(x), x)
        assert layer.train()(x).shape == x.shape
