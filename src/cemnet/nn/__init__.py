"""Frequency-domain layers; ``cemnet.nn.functional`` holds their stateless twins."""

from cemnet.nn import functional
from cemnet.nn.layers import (
    STORAGES,
    BlockMaxPool2d,
    FFTConv2d,
    GroupedLinear,
    SpectralBatchNorm2d,
    SpectralConv2d,
    SpectralDropout,
    SpectralLeakyReLU,
    SpectralMaxPool2d,
    SpectralSequential,
    ToFrequency,
    TwoBranchHead,
    apply_weight_fixation,
    mlp_branch,
)

__all__ = [
    "BlockMaxPool2d",
    "FFTConv2d",
    "GroupedLinear",
    "STORAGES",
    "SpectralBatchNorm2d",
    "SpectralConv2d",
    "SpectralDropout",
    "SpectralLeakyReLU",
    "SpectralMaxPool2d",
    "SpectralSequential",
    "ToFrequency",
    "TwoBranchHead",
    "apply_weight_fixation",
    "functional",
    "mlp_branch",
]
