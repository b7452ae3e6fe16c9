"""The FFT conventions of cemnet, written down once, and the transforms that follow them.

By default every frequency tensor in cemnet is the **full** two-dimensional
spectrum of a real signal over its last two dimensions, computed with
``torch.fft.fft2`` and the default ("backward") normalisation: the forward
transform is unscaled and the inverse divides by ``H * W``. Activations are
``(B, C, H, W)``; kernels are ``(C_out, C_in, K, K)`` in space and
``(C_out, C_in, H, W)`` in frequency.

The grid
--------
A :class:`SpectralGrid` is the one value that says what a spectrum stands
for: the spatial size ``(H, W)`` of its signal and whether it is the full
spectrum or the half one. Its ``columns`` (``W`` or ``W // 2 + 1``) are the
last dimension of every spectrum on it; layers keep one grid and functions
that need the signal size back take one.

Half spectrum
-------------
A real signal has a Hermitian spectrum, ``X[-k] = conj(X[k])``: ``rfft2`` keeps
the ``H x (W // 2 + 1)`` non-redundant frequencies and halves work and memory.
The paper works on full spectra, and its noise and batch-norm layers break the
symmetry (it takes the real part after each inverse transform), so the half
spectrum is a *variant* of the model (``SpectralGrid(..., half=True)``, the
preset option ``half_spectrum=True``), never a silent replacement.

Small grids
-----------
Grids of at most :data:`DENSE_DFT_MAX_POINTS` points transform real signals by
one matrix product instead of an FFT (:attr:`SpectralGrid.dense`): pocketfft's
per-transform overhead dominates tiny maps, while ``(N, H W) @ (H W, ...)`` is
one efficient GEMM (``python benchmarks/dense_dft.py`` measures both). Both
compute the same transform.

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
index-reversed in space, ``y[-n mod N]``. Both are valid networks.

Weight Fixation
---------------
The paper's projection (Eq. 6): take a frequency weight back to space, keep the
``K x K`` support, transform forward again. :func:`project_to_support` is that
map; it is linear, idempotent and the identity on kernels that already have the
support. :func:`support_projector` gives it as two thin matrices.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

import torch

ANCHORS = ("corner", "center")
CONJUGATIONS = ("input", "weight")
DENSE_DFT_MAX_POINTS = 64  # 8 x 8: see "Small grids" above


def check_choice(name: str, value: str, allowed: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``allowed``, else raise a ValueError naming both."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {list(allowed)}, got {value!r}")
    return value


@dataclass(frozen=True)
class SpectralGrid:
    """The spatial size of a signal and which of its spectra is kept: the shape of every tensor on it.

    Args:
        height, width: ``H`` and ``W`` of the spatial signal.
        half: the half spectrum (``rfft2``, ``W // 2 + 1`` columns) instead of
            the full one. Default: ``False`` (the paper).
        dense: transform real signals by a matrix product instead of an FFT.
            Default: for grids of at most :data:`DENSE_DFT_MAX_POINTS` points.

    Examples::

        >>> grid = SpectralGrid(28, 28, half=True)
        >>> grid.shape, grid.to_frequency(torch.randn(4, 1, 28, 28)).shape
        ((28, 15), torch.Size([4, 1, 28, 15]))
    """

    height: int
    width: int
    half: bool = False
    dense: bool = field(default=None, compare=False)  # type: ignore[assignment]

    def __post_init__(self) -> None:
        if self.height < 1 or self.width < 1:
            raise ValueError(f"a grid needs a positive size, got {self.height} x {self.width}")
        if self.dense is None:
            object.__setattr__(self, "dense", self.points <= DENSE_DFT_MAX_POINTS)

    @classmethod
    def of(cls, size: int | tuple[int, int], half: bool = False) -> SpectralGrid:
        """The grid of a square ``size`` or of ``(H, W)``."""
        height, width = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
        return cls(height, width, half)

    @property
    def size(self) -> tuple[int, int]:
        """``(H, W)``, the spatial signal's size."""
        return self.height, self.width

    @property
    def columns(self) -> int:
        """Frequencies kept per row: ``W // 2 + 1`` for the half spectrum, else ``W`` (the one place it is computed)."""
        return self.width // 2 + 1 if self.half else self.width

    @property
    def shape(self) -> tuple[int, int]:
        """``(H, columns)``: the last two dimensions of a spectrum on this grid."""
        return self.height, self.columns

    @property
    def points(self) -> int:
        return self.height * self.width

    def pooled(self, factor: int) -> SpectralGrid:
        """The grid after pooling by ``factor`` on both axes (same kind of spectrum)."""
        return SpectralGrid(self.height // factor, self.width // factor, self.half)

    def to_frequency(self, x: torch.Tensor) -> torch.Tensor:
        """Spectrum of a ``(..., H, W)`` signal: complex ``(..., H, columns)``.

        Real signals on a dense grid go through the DFT matrix; complex
        signals (full grids only) always through ``fft2``.
        """
        if tuple(x.shape[-2:]) != self.size:
            raise ValueError(f"expected a signal of size {self.size}, got shape {tuple(x.shape)}")
        if not self.dense or x.is_complex():
            return _HalfSpectrum.apply(x) if self.half else torch.fft.fft2(x)
        matrix = _dft_matrix(self, False, x.dtype, x.device)
        out = x.reshape(-1, self.points) @ matrix
        return torch.view_as_complex(out.view(*x.shape[:-2], self.height, self.columns, 2))

    def to_spatial(self, spectrum: torch.Tensor) -> torch.Tensor:
        """The real ``(..., H, W)`` signal of a ``(..., H, columns)`` spectrum.

        Full spectrum: the real part of ``ifft2``, as the paper takes after
        every inverse transform, discarding whatever the noise and batch-norm
        layers did to the Hermitian symmetry. Half spectrum: ``irfft2``.
        """
        if tuple(spectrum.shape[-2:]) != self.shape:
            raise ValueError(f"expected a spectrum of shape {self.shape}, got {tuple(spectrum.shape)}")
        if not self.dense:
            return torch.fft.irfft2(spectrum, s=self.size) if self.half else torch.fft.ifft2(spectrum).real
        real = torch.view_as_real(spectrum.resolve_conj())
        matrix = _dft_matrix(self, True, real.dtype, spectrum.device)
        return (real.reshape(-1, self.height * self.columns * 2) @ matrix).view(*spectrum.shape[:-2], *self.size)


def to_frequency(x: torch.Tensor, half: bool = False) -> torch.Tensor:
    """Spectrum of a real ``(..., H, W)`` tensor on its own grid (:meth:`SpectralGrid.to_frequency`)."""
    return SpectralGrid(*x.shape[-2:], half=half).to_frequency(x)


def to_spatial(spectrum: torch.Tensor, grid: SpectralGrid | None = None) -> torch.Tensor:
    """The real signal of a spectrum on ``grid`` (default: the full grid of its own shape)."""
    return (grid or SpectralGrid(*spectrum.shape[-2:])).to_spatial(spectrum)


@functools.lru_cache(maxsize=64)
def _dft_matrix(grid: SpectralGrid, inverse: bool, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The real matrix of :meth:`SpectralGrid.to_frequency` (``inverse=False``) or ``to_spatial``.

    Built by transforming the standard basis with ``torch.fft`` in float64, so
    the matrix product computes exactly what the FFT does, including how
    ``irfft2`` reads a half spectrum that is not Hermitian. Rows index the
    input (spectra as ``view_as_real`` pairs), columns the output.
    """
    fft = SpectralGrid(grid.height, grid.width, grid.half, dense=False)
    if inverse:
        basis = torch.eye(grid.height * grid.columns * 2, dtype=torch.float64).view(-1, *grid.shape, 2)
        matrix = fft.to_spatial(torch.view_as_complex(basis))
    else:
        basis = torch.eye(grid.points, dtype=torch.float64).view(-1, *grid.size)
        matrix = torch.view_as_real(fft.to_frequency(basis))
    return matrix.reshape(matrix.shape[0], -1).to(device=device, dtype=dtype)


class _HalfSpectrum(torch.autograd.Function):
    """``torch.fft.rfft2`` with a backward that is one ``irfft2`` of half size.

    The adjoint of the half-spectrum transform is ``H W irfft2(g')``, where
    ``g'`` halves the columns that stand for two conjugate columns of the full
    spectrum (all but column 0 and, for even ``W``, column ``W / 2``).
    PyTorch's own backward zero-pads ``g`` to the full spectrum and runs a
    complex ``ifft2`` on it; this one does half the work and equals it to
    rounding (tests/test_spectral.py).
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


def kernel_spectrum(weight: torch.Tensor, grid: SpectralGrid, anchor: str = "corner") -> torch.Tensor:
    """Spectrum of the padded kernel: ``(C_out, C_in, K, K)`` -> complex ``(C_out, C_in, *grid.shape)``."""
    return grid.to_frequency(pad_kernel(weight, grid.size, anchor))


def spectrum_to_kernel(spectrum: torch.Tensor, kernel_size: int, grid: SpectralGrid,
                       anchor: str = "corner") -> torch.Tensor:
    """The ``(C_out, C_in, K, K)`` support of a frequency weight on ``grid`` (no projection check).

    Complex for a full spectrum (its imaginary part is what a frequency
    weight may carry); real for a half one.
    """
    full = grid.to_spatial(spectrum) if grid.half else torch.fft.ifft2(spectrum)
    return crop_kernel(full, kernel_size, anchor)


def project_to_support(spectrum: torch.Tensor, kernel_size: int, grid: SpectralGrid | None = None,
                       anchor: str = "corner", real_kernel: bool = False) -> torch.Tensor:
    """Weight Fixation: the spectrum of the ``K x K`` support of a frequency weight.

    Args:
        spectrum: complex ``(..., H, columns)`` frequency weight on ``grid``.
        kernel_size: ``K``, the side of the support that is kept.
        grid: the weight's grid; default the full grid of its own shape.
        anchor: where the support sits, ``"corner"`` or ``"center"``.
        real_kernel: also drop the imaginary part of the spatial kernel, as the
            authors' MNIST code does. The paper's projection keeps it. (A
            half-spectrum kernel is real anyway.)

    Returns:
        complex ``(..., H, columns)`` spectrum whose inverse transform vanishes
        outside the support.
    """
    grid = grid or SpectralGrid(*spectrum.shape[-2:])
    kernel = spectrum_to_kernel(spectrum, kernel_size, grid, anchor)  # (..., min(K, H), min(K, W))
    if real_kernel and not grid.half:
        kernel = kernel.real.to(spectrum.dtype)
    return kernel_spectrum(kernel, grid, anchor)


@functools.lru_cache(maxsize=64)
def support_projector(
    grid: SpectralGrid, kernel_size: int, anchor: str = "corner", real_kernel: bool = False,
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
    and :func:`kernel_spectrum` to basis vectors in float64, so this is the same
    map as :func:`project_to_support`, at the cost of two GEMMs of inner size
    ``T`` and without a transpose of the weight.
    """
    points = grid.height * grid.columns * 2
    basis = torch.view_as_complex(torch.eye(points, dtype=torch.float64).view(points, *grid.shape, 2))
    taps = spectrum_to_kernel(basis, kernel_size, grid, anchor)  # (points, k, k)
    complex_taps = not grid.half and not real_kernel
    if not grid.half:
        taps = torch.view_as_real(taps) if complex_taps else taps.real
    count = taps[0].numel()
    down = taps.reshape(points, count).T
    tap_basis = torch.eye(count, dtype=torch.float64).view(count, *taps.shape[1:])
    if complex_taps:
        tap_basis = torch.view_as_complex(tap_basis)
    up = torch.view_as_real(kernel_spectrum(tap_basis, grid, anchor)).reshape(count, points).T
    return up.to(device, dtype).contiguous(), down.to(device, dtype).contiguous()
