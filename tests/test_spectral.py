import pytest
import torch

from cemnet import spectral
from cemnet.spectral import to_frequency, to_spatial


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
    spectrum = spectral.kernel_spectrum(kernel, (8, 8), anchor)
    torch.testing.assert_close(spectral.project_to_support(spectrum, 3, anchor), spectrum)
    noisy = spectrum + torch.randn_like(spectrum)
    once = spectral.project_to_support(noisy, 3, anchor)
    torch.testing.assert_close(spectral.project_to_support(once, 3, anchor), once)
    assert not torch.allclose(once, noisy)


def test_real_kernel_projection_drops_the_imaginary_part():
    spectrum = torch.randn(2, 2, 8, 8, dtype=torch.complex128)
    kernel = spectral.spectrum_to_kernel(spectral.project_to_support(spectrum, 3, real_kernel=True), 3)
    assert kernel.imag.abs().max() < 1e-12
    assert kernel.real.abs().max() > 1e-3


def test_invalid_anchor_names_the_choices():
    with pytest.raises(ValueError, match=r"anchor must be one of \['corner', 'center'\], got 'middle'"):
        spectral.pad_kernel(torch.zeros(1, 1, 3, 3), (4, 4), "middle")


@pytest.mark.parametrize("size", [(1, 1), (2, 2), (4, 3), (7, 5), (8, 8)])
@pytest.mark.parametrize("half", [False, True])
def test_dense_transforms_equal_the_fft_with_gradients(size, half):
    x = torch.randn(3, 2, *size, dtype=torch.float64, requires_grad=True)
    dense, fft = to_frequency(x, half, dense=True), to_frequency(x, half, dense=False)
    torch.testing.assert_close(dense, fft, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(fft)
    torch.testing.assert_close(torch.autograd.grad(dense, x, upstream)[0], torch.autograd.grad(fft, x, upstream)[0])
    # The inverse on a spectrum that is NOT Hermitian (as after noise and batch norm).
    spectrum = (fft.detach() + torch.randn_like(fft)).requires_grad_()
    signal = size if half else None
    dense, fft = to_spatial(spectrum, signal, dense=True), to_spatial(spectrum, signal, dense=False)
    torch.testing.assert_close(dense, fft, rtol=1e-12, atol=1e-12)
    upstream = torch.randn_like(fft)
    torch.testing.assert_close(torch.autograd.grad(dense, spectrum, upstream)[0],
                               torch.autograd.grad(fft, spectrum, upstream)[0])


def test_dense_transform_follows_dtype_and_conjugate_views():
    x = torch.randn(2, 4, 4)
    assert to_frequency(x, dense=True).dtype == torch.complex64
    spectrum = to_frequency(x.double())
    torch.testing.assert_close(to_spatial(spectrum.conj(), dense=True), to_spatial(spectrum.conj(), dense=False))


@pytest.mark.parametrize("size", [(6, 8), (7, 9), (5, 6), (1, 2), (16, 16)])
def test_half_spectrum_backward_equals_torch_rfft2(size):
    x = torch.randn(2, 3, *size, dtype=torch.float64, requires_grad=True)
    ours = to_frequency(x, half=True, dense=False)
    theirs = torch.fft.rfft2(x)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    upstream = torch.randn_like(theirs)
    torch.testing.assert_close(torch.autograd.grad(ours, x, upstream)[0], torch.autograd.grad(theirs, x, upstream)[0],
                               rtol=1e-12, atol=1e-12)
    small = torch.randn(1, 2, *size[-2:], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradgradcheck(lambda t: torch.view_as_real(to_frequency(t, half=True, dense=False)), (small,))
