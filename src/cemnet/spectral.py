"""The FFT conventions of cemnet, written down once.

By default every frequency tensor in cemnet is the **full** two-dimensional
spectrum of a real signal over its last two dimensions, computed with
``torch.fft.fft2`` and the default ("backward") normalisation: the forward transform is unscaled and
the inverse divides by ``H * W``. Activations are ``(B, C, H, W)``; kernels are
``(C_out, C_in, K, K)`` in space and ``(C_out, C_in, H, W)`` in frequency.

Kernel anchoring
----------------
A ``K x K`` kernel becomes an ``H x W`` filter by zero-padding. Two anchors:

* ``"corner"``: the kernel sits in the upper-left corner (the paper, Sec. 3.1.1).
* ``"center"``: the padded kernel is rolled by ``-(K // 2)`` on both axes so
  that its centre tap sits at index ``(0, 0)``. With ``conj="weight"`` this
  gives exactly ``F.conv2d`` with circular ``K // 2`` padding (odd ``K``).

Conjugation
-----------
``Y = sum_cin X * conj(W)`` ("weight", exact): ``ifft2(Y).real`` is the
cross-correlation that ``F.conv2d`` computes, with circular padding.
``Y = sum_cin conj(X) * W`` ("input", the paper's Eq. 4): the same result
index-reversed in space, ``y[-n mod N]``. Both are valid networks; see
``DESIGN.md`` section 1.

Half spectrum
-------------
A real signal has a Hermitian spectrum, ``X[-k] = conj(X[k])``: ``rfft2`` keeps
the ``H x (W // 2 + 1)`` non-redundant frequencies and halves work and memory.
The paper works on full spectra, and its noise and batch-norm layers break the
symmetry (it takes the real part after each inverse transform), so the half
spectrum is a *variant* of the model, selected by ``half=True`` / the preset
option ``half_spectrum=True``, never a silent replacement. Functions below take
``size=(H, W)`` where the half spectrum needs the signal size back.

Weight Fixation
---------------
The paper's projection (Eq. 6): take a frequency weight back to space, keep the
``K x K`` support, transform forward again. :func:`project_to_support` is that
map; it is linear, idempotent and the identity on kernels that already have the
support.
"""

from __future__ import annotations

import functools

import torch

ANCHORS = ("corner", "center")
CONJUGATIONS = ("input", "weight")


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise a ValueError naming both."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


# Maps of at most this many points (8 x 8) are transformed by one matrix product
# instead of an FFT: pocketfft's per-transform overhead dominates tiny maps, while
# (N, H W) @ (H W, ...) is one efficient GEMM. `python benchmarks/dense_dft.py`
# (2 CPU threads, 2026-11-26; table in docs/performance.md), rfft2 forward +
# backward: 100x512 maps of 4 x 4, 31.9 ms FFT vs 3.9 ms dense; 100x256 of 8 x 8,
# 33.4 vs 10.8 ms; 100x128 of 14 x 14, 22.1 vs 24.4 ms (irfft2: 16.8 vs 25.9 ms).
DENSE_DFT_MAX_POINTS = 64


@functools.lru_cache(maxsize=64)
def _dft_matrix(size: tuple[int, int], half: bool, inverse: bool, dtype: torch.dtype,
                device: torch.device) -> torch.Tensor:
    """The real matrix of :func:`to_frequency` (``inverse=False``) or :func:`to_spatial`.

    Built by transforming the standard basis with ``torch.fft`` in float64, so
    the matrix product computes exactly what the FFT path does, including how
    ``irfft2`` reads a half spectrum that is not Hermitian. Rows index the input
    (real spectra as ``view_as_real`` pairs), columns the output.
    """
    height, width = size
    columns = width // 2 + 1 if half else width
    if inverse:
        basis = torch.eye(height * columns * 2, dtype=torch.float64).view(-1, height, columns, 2)
        matrix = to_spatial(torch.view_as_complex(basis), size if half else None, dense=False)
    else:
        basis = torch.eye(height * width, dtype=torch.float64).view(-1, height, width)
        matrix = torch.view_as_real(to_frequency(basis, half, dense=False))
    return matrix.reshape(matrix.shape[0], -1).to(device=device, dtype=dtype)


def to_frequency(x: torch.Tensor, half: bool = False, dense: bool | None = None) -> torch.Tensor:
    """Spectrum of a real ``(..., H, W)`` tensor: complex ``(..., H, W)``, or ``(..., H, W // 2 + 1)`` if ``half``.

    ``dense`` chooses a matrix product over the FFT; by default for real maps of
    at most :data:`DENSE_DFT_MAX_POINTS` points. Both compute the same transform.
    """
    height, width = x.shape[-2:]
    if dense is None:
        dense = height * width <= DENSE_DFT_MAX_POINTS and not x.is_complex()
    if not dense:
        return _HalfSpectrum.apply(x) if half else torch.fft.fft2(x)
    matrix = _dft_matrix((height, width), half, False, x.dtype, x.device)
    out = x.reshape(-1, height * width) @ matrix
    return torch.view_as_complex(out.view(*x.shape[:-2], height, -1, 2))


class _HalfSpectrum(torch.autograd.Function):
    """``torch.fft.rfft2`` with a backward that is one ``irfft2`` of half size.

    The adjoint of the half-spectrum transform is ``H W irfft2(g')``, where
    ``g'`` halves the columns that stand for two conjugate columns of the full
    spectrum (all but column 0 and, for even ``W``, column ``W / 2``).
    PyTorch's own backward zero-pads ``g`` to the full spectrum and runs a
    complex ``ifft2`` on it; this one is 1.15-1.4x faster forward + backward
    (docs/performance.md) and equal to it to rounding (tests/test_spectral.py).
    """

    @staticmethod
    def forward(ctx, x):
        ctx.size = tuple(x.shape[-2:])
        return torch.fft.rfft2(x)

    @staticmethod
    def backward(ctx, grad):
        height, width = ctx.size
        weights = grad.real.new_full((grad.shape[-1],), height * width / 2)
        # Fills of slices, not item assignments: those copy a host scalar, which a CUDA graph cannot record.
        weights[:1].fill_(height * width)
        if width % 2 == 0:
            weights[-1:].fill_(height * width)
        return torch.fft.irfft2(grad * weights, s=ctx.size)


def to_spatial(x: torch.Tensor, size: tuple[int, int] | None = None, dense: bool | None = None) -> torch.Tensor:
    """The real ``(..., H, W)`` signal of a spectrum.

    Full spectrum (``size=None``): the real part of ``ifft2``, as the paper
    takes after every inverse transform, discarding whatever the noise and
    batch-norm layers did to the Hermitian symmetry. Half spectrum: ``irfft2``
    to the given ``size``. ``dense`` as for :func:`to_frequency`.
    """
    height, columns = x.shape[-2:]
    signal = size if size is not None else (height, columns)
    if dense is None:
        dense = signal[0] * signal[1] <= DENSE_DFT_MAX_POINTS
    if not dense:
        return torch.fft.irfft2(x, s=size) if size is not None else torch.fft.ifft2(x).real
    real = torch.view_as_real(x.resolve_conj())
    matrix = _dft_matrix(signal, size is not None, True, real.dtype, x.device)
    return (real.reshape(-1, height * columns * 2) @ matrix).view(*x.shape[:-2], *signal)


def _shift(kernel_size: int, anchor: str) -> int:
    return -(kernel_size // 2) if check_choice("anchor", anchor, ANCHORS) == "center" else 0


def pad_kernel(weight: torch.Tensor, size: tuple[int, int], anchor: str = "corner") -> torch.Tensor:
    """Zero-pad a ``(..., K, K)`` kernel to ``(..., H, W)`` with the given anchor.

    A kernel larger than the signal (the 3x3 convolutions of the last VGG block
    run on 2x2 maps) is folded modulo ``(H, W)``: tap ``n`` lands on ``n mod H``,
    which is what a circular convolution on the small grid does with it.
    """
    k_h, k_w = weight.shape[-2:]
    height, width = size
    tiles_h, tiles_w = -(-k_h // height), -(-k_w // width)
    padded = torch.nn.functional.pad(weight, (0, tiles_w * width - k_w, 0, tiles_h * height - k_h))
    if tiles_h > 1 or tiles_w > 1:
        tiled = padded.reshape(*padded.shape[:-2], tiles_h, height, tiles_w, width)
        padded = tiled.sum(dim=(-4, -2))  # (..., H, W): taps folded modulo the grid
    shift = (_shift(k_h, anchor), _shift(k_w, anchor))
    return torch.roll(padded, shifts=shift, dims=(-2, -1)) if any(shift) else padded


def crop_kernel(padded: torch.Tensor, kernel_size: int, anchor: str = "corner") -> torch.Tensor:
    """Inverse of :func:`pad_kernel`: the support of an ``(..., H, W)`` filter.

    The support is ``min(K, H) x min(K, W)``: a kernel folded onto a smaller
    grid comes back folded.
    """
    shift = _shift(kernel_size, anchor)
    if shift:
        padded = torch.roll(padded, shifts=(-shift, -shift), dims=(-2, -1))
    return padded[..., :kernel_size, :kernel_size]


def kernel_spectrum(
    weight: torch.Tensor, size: tuple[int, int], anchor: str = "corner", half: bool = False
) -> torch.Tensor:
    """Spectrum of the padded kernel: ``(C_out, C_in, K, K)`` -> complex ``(C_out, C_in, H, W)``
    (``W // 2 + 1`` columns if ``half``)."""
    return to_frequency(pad_kernel(weight, size, anchor), half)


def spectrum_to_kernel(
    spectrum: torch.Tensor, kernel_size: int, anchor: str = "corner", size: tuple[int, int] | None = None
) -> torch.Tensor:
    """The ``(C_out, C_in, K, K)`` support of a frequency weight (no projection check).

    Complex for a full spectrum; real for a half one (pass the signal ``size``).
    """
    full = to_spatial(spectrum, size) if size is not None else torch.fft.ifft2(spectrum)
    return crop_kernel(full, kernel_size, anchor)


def project_to_support(
    spectrum: torch.Tensor, kernel_size: int, anchor: str = "corner", real_kernel: bool = False,
    size: tuple[int, int] | None = None,
) -> torch.Tensor:
    """Weight Fixation: the spectrum of the ``K x K`` support of a frequency weight.

    Args:
        spectrum: complex ``(..., H, W)`` frequency weight.
        kernel_size: ``K``, the side of the support that is kept.
        anchor: where the support sits, ``"corner"`` or ``"center"``.
        real_kernel: also drop the imaginary part of the spatial kernel, as the
            authors' MNIST code does. The paper's projection keeps it.
        size: ``(H, W)`` for a half spectrum, whose kernel is real anyway.

    Returns:
        complex ``(..., H, W)`` spectrum whose inverse transform vanishes
        outside the support.
    """
    kernel = spectrum_to_kernel(spectrum, kernel_size, anchor, size)  # (..., min(K, H), min(K, W))
    if size is not None:
        return kernel_spectrum(kernel, size, anchor, half=True)
    if real_kernel:
        kernel = kernel.real.to(spectrum.dtype)
    return kernel_spectrum(kernel, spectrum.shape[-2:], anchor)


@functools.lru_cache(maxsize=64)
def support_projector(
    size: tuple[int, int], kernel_size: int, anchor: str = "corner", real_kernel: bool = False, half: bool = False,
    dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu",
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`project_to_support` as two thin real matrices ``(up, down)``.

    Weight Fixation is linear and has rank ``T``, the number of real kernel
    taps: ``K^2`` for half spectra and for ``real_kernel``, ``2 K^2`` for the
    paper's complex taps. Flatten a spectrum over ``(H, F)`` as
    ``view_as_real`` pairs (a column of the ``(H * F * 2, C_in * C_out)`` view of
    a frequency-major weight); its projection is ``up @ (down @ column)``, where
    ``down`` (``T x 2 H F``) reads the taps and ``up`` (``2 H F x T``)
    transforms them back. Both are built by applying :func:`spectrum_to_kernel`
    and :func:`kernel_spectrum` to basis vectors, so this is the same map as
    :func:`project_to_support`, at the cost of two GEMMs of inner size ``T``
    and without a transpose of the weight.
    """
    height, width = size
    columns = width // 2 + 1 if half else width
    points = height * columns * 2
    basis = torch.view_as_complex(torch.eye(points, dtype=torch.float64).view(points, height, columns, 2))
    taps = spectrum_to_kernel(basis, kernel_size, anchor, size if half else None)  # (points, k, k)
    complex_taps = not half and not real_kernel
    if not half:
        taps = torch.view_as_real(taps) if complex_taps else taps.real
    count = taps[0].numel()
    down = taps.reshape(points, count).T
    tap_basis = torch.eye(count, dtype=torch.float64).view(count, *taps.shape[1:])
    if complex_taps:
        tap_basis = torch.view_as_complex(tap_basis)
    up = torch.view_as_real(kernel_spectrum(tap_basis, size, anchor, half)).reshape(count, points).T
    return up.to(device, dtype).contiguous(), down.to(device, dtype).contiguous()
