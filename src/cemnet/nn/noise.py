"""The paper's approximated dropout and Leaky ReLU (Sec. 3.1.3-3.1.4), and the container that fuses their draws."""

from __future__ import annotations

import torch
from torch import nn

from cemnet.nn import functional as SF
from cemnet.nn._base import _SpectralModule


class _MultiplicativeNoise(_SpectralModule):
    """Shared body of the approximated dropout and Leaky ReLU: ``N(1, sigma)`` per part."""

    def __init__(self, sigma: float, active_in_eval: bool = False) -> None:
        super().__init__()
        if sigma < 0:
            raise ValueError(f"sigma must be non-negative, got {sigma}")
        self.sigma = float(sigma)
        self.active_in_eval = active_in_eval

    @property
    def active(self) -> bool:
        return self.training or self.active_in_eval

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return SF.multiplicative_noise(x, self.sigma, self.active, kernels=self.kernels)


class SpectralDropout(_MultiplicativeNoise):
    """Approximated dropout (paper Sec. 3.1.3): multiply by ``N(1, p/2)`` in training.

    Real and imaginary parts get independent draws, fresh on every forward;
    the layer is the identity in eval mode.

    Args:
        p: the dropout rate it imitates; ``sigma = p / 2``. Default: 0.5.

    Shape:
        complex ``(B, C, H, W)`` (any shape) -> same shape.
    """

    def __init__(self, p: float = 0.5) -> None:
        if not 0 <= p < 1:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        super().__init__(p / 2)
        self.p = p


class SpectralLeakyReLU(_MultiplicativeNoise):
    """Approximated Leaky ReLU (paper Sec. 3.1.4): multiply by ``N(1, sigma)``.

    Followed by :class:`SpectralDropout`, the combined factor is the *product*
    of the two independent draws. The paper's Eq. 22-23 describe instead the
    product of the two densities, which is not the law of any factor these
    layers draw; cemnet implements the draws (see docs/deviations.md).

    Args:
        p: rate that sets the default ``sigma = p / 4``. Default: 0.5.
        sigma: explicit standard deviation (the authors' code uses ``p / 6``).
        active_in_eval: keep the noise at evaluation, as the authors' code
            does. Default: ``False`` (identity in eval mode, the paper).

    Shape:
        complex ``(B, C, H, W)`` (any shape) -> same shape.
    """

    def __init__(self, p: float = 0.5, sigma: float | None = None, active_in_eval: bool = False) -> None:
        super().__init__(p / 4 if sigma is None else sigma, active_in_eval)
        self.p = p


class SpectralSequential(nn.Sequential):
    """``nn.Sequential`` that applies each run of consecutive noise layers as one product.

    A :class:`SpectralLeakyReLU` followed by a :class:`SpectralDropout` then
    costs one multiplication forward and one backward, and autograd keeps one
    factor instead of two (a smaller training step, docs/design.md).
    The factor has the law of the layers' factors multiplied; with PyTorch's
    kernels the draws are those of the layers run one by one, in the same
    order, while the native kernels draw a pair of factors from one key (see
    :func:`cemnet.nn.functional.noise_factor`). A noise layer with forward
    hooks is run on its own, so its hooks fire. Children and ``state_dict``
    keys are those of ``nn.Sequential``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        run: list[_MultiplicativeNoise] = []
        for module in self:
            if isinstance(module, _MultiplicativeNoise) and not (module._forward_hooks or module._forward_pre_hooks):
                if module.active:
                    run.append(module)
                continue
            x = _apply_noise(x, run)
            run = []
            x = module(x)
        return _apply_noise(x, run)


def _apply_noise(x: torch.Tensor, run: list[_MultiplicativeNoise]) -> torch.Tensor:
    if not run:
        return x
    return SF.multiplicative_noise(x, [module.sigma for module in run], kernels=run[0].kernels)
