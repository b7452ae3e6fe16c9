"""Frequency-domain layers, one module per family; :mod:`cemnet.nn.functional` holds their stateless twins.

======================  ===========================================================
module                  layers
======================  ===========================================================
``cemnet.nn.transform``  :class:`ToFrequency`
``cemnet.nn.activation`` :class:`SpatialLeakyReLU`, :class:`SplitLeakyReLU` (true nonlinearities)
``cemnet.nn.conv``       :class:`SpectralConv2d` (+ :func:`apply_weight_fixation`), :class:`FFTConv2d`
``cemnet.nn.norm``       :class:`SpectralBatchNorm2d`
``cemnet.nn.noise``      :class:`SpectralDropout`, :class:`SpectralLeakyReLU`, :class:`SpectralSequential`
``cemnet.nn.pool``       :class:`SpectralMaxPool2d`, :class:`SpectralTruncation2d`
``cemnet.nn.head``       :class:`TwoBranchHead`, :class:`GroupedLinear`, :func:`mlp_branch`
======================  ===========================================================

Every layer takes and returns complex spectra ``(B, C, H, F)`` on a
:class:`~cemnet.spectral.SpectralGrid`, except :class:`ToFrequency` (real
maps in), :class:`TwoBranchHead` (real logits out), :class:`FFTConv2d` (real
maps in and out) and :class:`GroupedLinear` (real features).

Complex weights are stored as real tensors with a dimension of two for the
real and imaginary parts, frequency-major ``(H, F, 2, C_in, C_out)``: the
layout the batched products read. Real storage keeps ``Module.to(dtype)``,
``.double()``, DDP and safetensors working unchanged, and it is exactly the
paper's two-branch storage: an optimizer sees the real and imaginary parts as
separate real numbers.
"""

from cemnet.nn import functional
from cemnet.nn.activation import SpatialLeakyReLU, SplitLeakyReLU
from cemnet.nn.conv import (
    FIXATIONS,
    STORAGES,
    FFTConv2d,
    SpectralConv2d,
    apply_weight_fixation,
)
from cemnet.nn.head import GroupedLinear, TwoBranchHead, mlp_branch
from cemnet.nn.noise import SpectralDropout, SpectralLeakyReLU, SpectralSequential
from cemnet.nn.norm import SpectralBatchNorm2d
from cemnet.nn.pool import SpectralMaxPool2d, SpectralTruncation2d
from cemnet.nn.transform import ToFrequency

__all__ = [
    "FIXATIONS",
    "STORAGES",
    "FFTConv2d",
    "GroupedLinear",
    "SpatialLeakyReLU",
    "SpectralBatchNorm2d",
    "SpectralConv2d",
    "SpectralDropout",
    "SpectralLeakyReLU",
    "SpectralMaxPool2d",
    "SpectralSequential",
    "SpectralTruncation2d",
    "SplitLeakyReLU",
    "ToFrequency",
    "TwoBranchHead",
    "apply_weight_fixation",
    "functional",
    "mlp_branch",
]
