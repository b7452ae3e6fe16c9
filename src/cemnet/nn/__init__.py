"""Frequency-domain layers; ``cemnet.nn.functional`` holds their stateless twins."""

from cemnet.nn import functional
from cemnet.nn.layers import (
    DROPOUT_MASKS,
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
    UniformMaskDropout,
    apply_weight_fixation,
    dropout_layer,
    mlp_branch,
)

__all__ = [
    "BlockMaxPool2d",
    "DROPOUT_MASKS",
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
    "UniformMaskDropout",
    "apply_weight_fixation",
    "dropout_layer",
    "functional",
    "mlp_branch",
]
