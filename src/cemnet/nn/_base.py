"""What every frequency-domain layer shares: where it computes, how it checks its input, how it prints."""

from __future__ import annotations

import inspect

import torch
from torch import nn

from cemnet.nn import functional as SF
from cemnet.spectral import SpectralGrid


class _SpectralModule(nn.Module):
    """Private base of the layers of :mod:`cemnet.nn`.

    * **Decided once.** The layer's computation is chosen in :meth:`_configure`
      when it is built and again whenever it is moved (``.to()``, ``.cuda()``,
      ``.double()``, ...: all go through ``Module._apply``), from its device,
      never per call. ``kernels`` is then the implementation of the noise and
      batch-norm primitives for that device
      (:func:`cemnet.nn.functional.kernels_for`). Layers without parameters
      know their device all the same: the move is applied to an empty tensor.
    * **Checked input.** :meth:`_check_spectrum` raises a ValueError that names
      what was expected and what came.
    * **Printed settings.** ``extra_repr`` lists the constructor's arguments
      that differ from their defaults (required ones always, channel and
      feature counts without their names), read back from the attributes of
      the same name.
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        super().__init__()
        self._device = torch.empty(0, device=device).device
        self._configure()

    @property
    def device(self) -> torch.device:
        return self._device

    def _configure(self) -> None:
        """Choose how the layer computes on :attr:`device` (subclasses may add to it)."""
        self.kernels = SF.kernels_for(self._device)

    def _apply(self, fn, recurse=True):
        module = super()._apply(fn, recurse)
        self._device = fn(torch.empty(0, device=self._device)).device
        self._configure()
        return module

    def _check_spectrum(self, x: torch.Tensor, channels: int | None = None, grid: SpectralGrid | None = None) -> None:
        SF.check_spectrum(x)
        name = type(self).__name__
        if channels is not None and x.shape[1] != channels:
            raise ValueError(f"{name} expected {channels} input channels, got {x.shape[1]} (input shape {tuple(x.shape)})")
        if grid is not None and tuple(x.shape[-2:]) != grid.shape:
            what = f"spatial size {grid.size}" if not grid.half else f"half spectrum {grid.shape} of size {grid.size}"
            raise ValueError(f"{name} expected {what}, got {tuple(x.shape[-2:])} (input shape {tuple(x.shape)})")

    def extra_repr(self) -> str:
        parts = []
        for name, parameter in inspect.signature(type(self).__init__).parameters.items():
            if name in ("self", "device", "dtype") or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
                continue
            value = getattr(self, name)
            if isinstance(parameter.default, bool) and (value is None or isinstance(value, torch.Tensor)):
                value = value is not None  # a flag such as bias=True, stored as a parameter or None
            if parameter.default is parameter.empty and name.endswith(("channels", "features")):
                parts.append(repr(value))  # as torch.nn prints sizes: "3, 16, kernel_size=3"
            elif parameter.default is parameter.empty or value != parameter.default:
                parts.append(f"{name}={value!r}")
        return ", ".join(parts)


class _GridModule(_SpectralModule):
    """A layer bound to one :class:`~cemnet.spectral.SpectralGrid`, ``self.grid``, set by its constructor.

    ``input_size`` and ``half`` read the grid back: they are constructor
    arguments, and ``extra_repr`` prints them from these attributes.
    """

    grid: SpectralGrid

    @property
    def input_size(self) -> tuple[int, int]:
        return self.grid.size

    @property
    def half(self) -> bool:
        return self.grid.half
