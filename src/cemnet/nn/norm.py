"""Batch norm of spectra: the real and imaginary parts normalised separately (paper Sec. 3.1.2)."""

from __future__ import annotations

import torch
from torch import nn

from cemnet.nn import functional as SF
from cemnet.nn._base import _SpectralModule


class SpectralBatchNorm2d(_SpectralModule):
    """Batch norm of the real and imaginary parts, with separate statistics (paper Eq. 12-15).

    Statistics are per channel over the batch and all frequencies ``(B, H, W)``,
    as ``nn.BatchNorm2d`` keeps them, not per frequency (a literal reading of
    Eq. 11 would keep one per frequency); the authors' code does the same.

    Args:
        num_features: ``C``.
        eps, momentum: as for ``nn.BatchNorm2d``.

    Shape:
        complex ``(B, C, H, W)`` -> complex ``(B, C, H, W)``, in the input's memory layout.

    Attributes:
        real, imag: two ``nn.BatchNorm2d`` holding each part's parameters,
            statistics and settings. The layer computes both parts at once
            (:func:`cemnet.nn.functional.spectral_batch_norm`) but takes its
            mode and ``momentum`` from them, so that utilities which switch
            batch-norm modules (:func:`cemnet.training.recalibrate_batch_norm`
            sets them to training mode with ``momentum=None`` inside an
            eval-mode model) act on it as on any batch norm.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.1, device=None, dtype=None) -> None:
        super().__init__(device)
        self.real = nn.BatchNorm2d(num_features, eps, momentum, device=device, dtype=dtype)
        self.imag = nn.BatchNorm2d(num_features, eps, momentum, device=device, dtype=dtype)

    @property
    def num_features(self) -> int:
        return self.real.num_features

    @property
    def eps(self) -> float:
        return self.real.eps

    @property
    def momentum(self) -> float | None:
        return self.real.momentum

    def reset_parameters(self) -> None:
        self.real.reset_parameters()
        self.imag.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_spectrum(x, self.num_features)
        real, imag = self.real, self.imag
        weight, bias = torch.stack((real.weight, imag.weight), 1), torch.stack((real.bias, imag.bias), 1)
        if not real.training:
            running_mean = torch.stack((real.running_mean, imag.running_mean), 1)
            running_var = torch.stack((real.running_var, imag.running_var), 1)
            return SF.spectral_batch_norm(x, running_mean, running_var, weight, bias, False, eps=real.eps,
                                          kernels=self.kernels)
        real.num_batches_tracked.add_(1)
        imag.num_batches_tracked.add_(1)
        momentum = real.momentum
        if momentum is None:  # nn.BatchNorm2d's cumulative average
            momentum = 1.0 / float(real.num_batches_tracked)
        # The functional form, with the running update on the two modules' own buffers.
        out, mean, var = SF.spectral_batch_norm_with_stats(x, weight, bias, real.eps, kernels=self.kernels)
        SF.update_running_stats((real.running_mean, imag.running_mean), (real.running_var, imag.running_var),
                                mean, var, x.numel() // x.shape[1], momentum)
        return out
