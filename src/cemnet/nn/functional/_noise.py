"""The approximated dropout and Leaky ReLU of the paper (Sec. 3.1.3-3.1.4): multiplicative Gaussian noise."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cemnet.nn.functional._kernels import TorchKernels, kernels_for


def multiplicative_noise(x: torch.Tensor, sigma: float | Sequence[float], training: bool = True, *,
                         kernels: TorchKernels | None = None) -> torch.Tensor:
    """Multiply real and imaginary parts by independent ``N(1, sigma)`` draws.

    Several sigmas apply consecutive noise layers in one product: the factor
    is the product of one independent draw per sigma (:func:`noise_factor`),
    so autograd keeps one factor instead of one per layer.
    Identity when ``training`` is false or every sigma is zero.
    """
    sigmas = [float(s) for s in ((sigma,) if isinstance(sigma, (int, float)) else sigma) if s != 0]
    if not training or not sigmas:
        return x
    parts = torch.view_as_real(x)  # (B, C, H, W, 2): real and imaginary planes
    # The factor is drawn whole, so forward and backward are one product each.
    return torch.view_as_complex(parts * noise_factor(parts, sigmas, kernels=kernels))


def noise_factor(like: torch.Tensor, sigmas: Sequence[float], *, kernels: TorchKernels | None = None) -> torch.Tensor:
    """``prod_k N(1, sigma_k)``, independent draws shaped like ``like`` (no autograd history).

    With PyTorch's kernels each sigma is one draw from PyTorch's generator, in
    order, so a seeded run draws what the layers would draw one by one. The
    native kernels compute each pair of factors ``(1 + a z1)(1 + b z2)`` in one
    pass on all threads, with one key per pair drawn from PyTorch's default
    generator. Both give the same law and different numbers for one seed.
    """
    return (kernels or kernels_for(like.device)).noise_factor(like, sigmas)
