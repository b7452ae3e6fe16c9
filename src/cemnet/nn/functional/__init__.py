"""Stateless frequency-domain operations: the math of the layers in :mod:`cemnet.nn`, one module per family.

Activations are complex spectra ``(B, C, H, W)``, or ``(B, C, H, W // 2 + 1)``
on a half-spectrum :class:`~cemnet.spectral.SpectralGrid`, as described in
:mod:`cemnet.spectral`. See the matching layer for the maths and the shapes.
The noise and batch-norm functions take the primitives they compute with
(``kernels``); the layers pass the ones they chose when they were built or
moved, and direct calls get those of the input's device.
"""

from cemnet.nn.functional._activation import spatial_leaky_relu, split_leaky_relu
from cemnet.nn.functional._conv import (
    check_spectrum,
    frequency_major,
    from_frequency_major,
    project_frequency_major,
    project_gradient,
    spectral_conv2d,
)
from cemnet.nn.functional._kernels import (
    NATIVE,
    TORCH,
    TORCH_CPU,
    NativeKernels,
    TorchKernels,
    kernels_for,
    normal_like,
)
from cemnet.nn.functional._linear import grouped_linear
from cemnet.nn.functional._noise import multiplicative_noise, noise_factor
from cemnet.nn.functional._norm import (
    ONE_PASS_MAX_MEAN_RATIO,
    spectral_batch_norm,
    spectral_batch_norm_with_stats,
    update_running_stats,
)
from cemnet.nn.functional._pool import (
    block_max_pool2d,
    kept_frequencies,
    spectral_max_pool2d,
    spectral_truncate2d,
)

__all__ = [
    "NATIVE",
    "ONE_PASS_MAX_MEAN_RATIO",
    "TORCH",
    "TORCH_CPU",
    "NativeKernels",
    "TorchKernels",
    "block_max_pool2d",
    "check_spectrum",
    "frequency_major",
    "from_frequency_major",
    "grouped_linear",
    "kept_frequencies",
    "kernels_for",
    "multiplicative_noise",
    "noise_factor",
    "normal_like",
    "project_frequency_major",
    "project_gradient",
    "spatial_leaky_relu",
    "spectral_batch_norm",
    "spectral_batch_norm_with_stats",
    "spectral_conv2d",
    "spectral_max_pool2d",
    "spectral_truncate2d",
    "split_leaky_relu",
    "update_running_stats",
]
