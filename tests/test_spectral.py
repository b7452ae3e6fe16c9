import pytest
import torch

from cemnet import spectral
from cemnet.spectral import SpectralGrid, to_frequency


@pytest.mark.parametrize("anchor", spectral.ANCHORS)
@pytest.mark.parametrize("k", [1, 3, 4, 5])
def test_pad_then_crop_is_identity(anchor, k):
    kernel = torch.randn(2, 3, k, k, dtype=torch.float64)
    padded = spectral.pad_kernel(kernel, (9, 8), anchor)
    assert padded.shape == (2, 3, 9, 8)
    torch.testing.assert_close(spectral.crop_kernel(padded, k, anchor), kernel)
    assert padded.abs().sum() == pytest.approx(kernel.abs().sum().item())


def test_center_anchor_puts_middle_tap_at_origin():
    kernel = torch.zeros(1, 1, 3, 3)
    kernel[0, 0, 1, 1] = 1.0
    padded = spectral.pad_kernel(kernel, (6, 6), "center")
    assert padded[0, 0, 0, 0] == 1.0 and padded.sum() == 1.0


def test_kernel_larger_than_grid_is_folded():
    kernel = torch.arange(9.0).reshape(1, 1, 3, 3)
    folded = spectral.pad_kernel(kernel, (2, 2), "corner")
    # Tap n lands on n mod 2: rows {0, 2} and columns {0, 2} add up.
    expected = torch.tensor([[0 + 2 + 6 + 8, 1 + 7], [3 + 5, 4]], dtype=torch.float32)
    torch.testing.assert_close(folded[0, 0], expected)


@pytest.mark.parametrize("anchor", spectral.ANCHORS)
def test_projection_is_idempotent_and_keeps_supported_kernels(anchor):
    kernel = torch.randn(4, 2, 3, 3, dtype=torch.float64)
    spectrum = spectral.kernel_spectrum(kernel, SpectralGrid(8, 8), anchor)
    torch.testing.assert_close(spectral.project_to_support(spectrum, 3, anchor=anchor), spectrum)
    noisy = spectrum + torch.randn_like(spectrum)
    once = spectral.project_to_support(noisy, 3, anchor=anchor)
    torch.testing.assert_close(spectral.project_to_support(once, 3, anchor=anchor), once)
    assert not torch.allclose(once, noisy)


def test_real_kernel_projection_drops_the_imaginary_part():
    spectrum = torch.randn(2, 2, 8, 8, dtype=torch.complex128)
    kernel = spectral.spectrum_to_kernel(spectral.project_to_support(spectrum, 3, real_kernel=True), 3, SpectralGrid(8, 8))
    assert kernel.imag.abs().max() < 1e-12
    assert kernel.real.abs().max() > 1e-3


def test_invalid_anchor_names_the_choices():
    with pytest.raises(ValueError, match=r"anchor must be one of \['corner', 'center'\], got 'middle'"):
        spectral.pad_kernel(torch.zeros(1, 1, 3, 3), (4, 4), "middle")


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (4, 3), (7, 5), (8, 8)])
@pytest.mark.parametrize("half", [False, True])
def test_dense_transforms_equal_the_fft_with_gradients(size, half):
    dense_grid, fft_grid = SpectralGrid(*size, half, dense=True), SpectralGrid(*size, half, dense=False)
    x = torch.randn(3, 2, *size, dtype=torch.float64, requires_grad=True)
    dense, fft = dense_grid.to_frequency(x), fft_grid.to_frequency(x)
    torch.testing.assert_close(dense, fft, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(fft)
    torch.testing.assert_close(torch.autograd.grad(dense, x, upstream)[0], torch.autograd.grad(fft, x, upstream)[0])
    # The inverse on a spectrum that is NOT Hermitian (as after noise and batch norm).
    spectrum = (fft.detach() + torch.randn_like(fft)).requires_grad_()
    dense, fft = dense_grid.to_spatial(spectrum), fft_grid.to_spatial(spectrum)
    torch.testing.assert_close(dense, fft, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(fft)
    torch.testing.assert_close(torch.autograd.grad(dense, spectrum, upstream)[0],
                               torch.autograd.grad(fft, spectrum, upstream)[0])


def test_dense_transform_follows_dtype_and_conjugate_views():
    x = torch.randn(2, 4, 4)
    dense, fft = SpectralGrid(4, 4, dense=True), SpectralGrid(4, 4, dense=False)
    assert dense.to_frequency(x).dtype == torch.complex64
    spectrum = to_frequency(x.double())
    torch.testing.assert_close(dense.to_spatial(spectrum.conj()), fft.to_spatial(spectrum.conj()))


def test_the_grid_decides_dense_once_and_checks_shapes():
    assert SpectralGrid(8, 8).dense and not SpectralGrid(8, 9).dense  # at most 64 points
    grid = SpectralGrid.of((6, 7), half=True)
    assert grid.shape == (6, 4) and grid.columns == 4 and grid.size == (6, 7) and grid.pooled(2) == SpectralGrid(3, 3, True)
    with pytest.raises(ValueError, match=r"expected a signal of size \(6, 7\)"):
        grid.to_frequency(torch.randn(2, 6, 6))
    with pytest.raises(ValueError, match=r"expected a spectrum of shape \(6, 4\)"):
        grid.to_spatial(torch.randn(2, 6, 7, dtype=torch.complex64))
    with pytest.raises(ValueError, match="positive size"):
        SpectralGrid(0, 3)


@pytest.mark.parametrize("size", [(6, 8), (7, 9), (5, 6), (1, 2), (16, 16)])
def test_half_spectrum_backward_equals_torch_rfft2(size):
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    ours = SpectralGrid(*size, half=True, dense=False).to_frequency(x)
    theirs = torch.fft.rfft2(x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    upstream = torch.randn_like(theirs)
    torch.testing.assert_close(torch.autograd.grad(ours, x, upstream)[0], torch.autograd.grad(theirs, x, upstream)[0],
                               rtol=1e-12, atol=1e-12)
    small = torch.randn(1, 2, *size[-2:], dtype=torch.float64, requires_grad=True)
    fft = SpectralGrid(*size, half=True, dense=False)
    assert torch.autograd.gradgradcheck(lambda t: torch.view_as_real(fft.to_frequency(t)), (small,))
