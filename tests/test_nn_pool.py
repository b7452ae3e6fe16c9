"""cemnet.nn.pool: spectral max pooling equals spatial max pooling; truncation is FCNN's low-pass subsampling."""

import pytest
import torch
import torch.nn.functional as F
from conftest import DOUBLE, assert_rel_close

from cemnet import nn as cnn
from cemnet.nn import functional as SF
from cemnet.spectral import to_frequency, to_spatial


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
        out = SF.block_max_pool2d(x, 2)
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


def test_gradcheck_max_pool():
    layer = cnn.SpectralMaxPool2d(2).double()
    # A generic complex input: the spectrum of a real map would be Hermitian.
    x = torch.randn(4, 2, 6, 6, dtype=torch.complex128, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (x,))
