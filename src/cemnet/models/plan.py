"""A layer plan: the one description from which a CNN and its CEMNet twin are both built.

A :class:`LayerPlan` is the feature extractor as a flat sequence of steps
(:class:`Conv`, :class:`BatchNorm`, :class:`Activation`, :class:`Dropout`,
:class:`Pool`), in the order the CNN applies them, and the dense part as a
:class:`Head`. The presets write theirs from a :class:`~cemnet.models.NetSpec`
(:meth:`NetSpec.plan`); :func:`cemnet.from_cnn` reads one off a user's CNN.
:class:`~cemnet.models.ConvNet` and :class:`~cemnet.models.CEMNet` build
from a plan step by step, so a preset and a converted CNN of the same plan
are the same network.

Step by step, in the CNN and in the CEMNet:

================================  ===========================================
step                              CNN / CEMNet
================================  ===========================================
``Conv(C_in, C_out, K, bias)``    ``Conv2d(K, padding=K // 2)`` / :class:`~cemnet.nn.SpectralConv2d`
``BatchNorm(C)``                  ``BatchNorm2d`` / :class:`~cemnet.nn.SpectralBatchNorm2d`
``Activation(slope)``             ``LeakyReLU(slope)`` (``ReLU`` for 0) / the approximated Leaky ReLU
``Dropout(p)``                    ``Dropout(p)`` / :class:`~cemnet.nn.SpectralDropout`
``Pool()``                        ``MaxPool2d(2)`` / :class:`~cemnet.nn.SpectralMaxPool2d`
``Head``                          flatten, MLP, ``Linear`` / :class:`~cemnet.nn.TwoBranchHead`
================================  ===========================================
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Conv:
    """A stride-1 ``K x K`` convolution with "same" zero padding (odd ``K``)."""

    in_channels: int
    out_channels: int
    kernel_size: int
    bias: bool


@dataclass(frozen=True)
class BatchNorm:
    """Batch norm over ``channels`` feature maps (``eps`` and ``momentum`` as ``nn.BatchNorm2d``'s)."""

    channels: int
    eps: float = 1e-5
    momentum: float = 0.1


@dataclass(frozen=True)
class Activation:
    """A Leaky ReLU of slope ``negative_slope`` (0: a ReLU)."""

    negative_slope: float


@dataclass(frozen=True)
class Dropout:
    """Dropout of rate ``p``."""

    p: float


@dataclass(frozen=True)
class Pool:
    """A 2x2 max pool of stride 2: the end of a stage."""


Step = Conv | BatchNorm | Activation | Dropout | Pool


@dataclass(frozen=True)
class Head:
    """The dense part: ``[Linear, BatchNorm1d?, LeakyReLU, Dropout?]`` per hidden width, then ``Linear``.

    Attributes:
        hidden: widths of the hidden layers.
        negative_slope: of their activations (0: ReLU).
        dropout: rate after each hidden layer; 0 for none.
        batch_norm: ``BatchNorm1d`` after each hidden ``Linear``.
        bias: the hidden ``Linear`` layers have biases (in the CNN; the CEMNet's
            two-branch head has them exactly where it has no batch norm).
    """

    hidden: tuple[int, ...]
    negative_slope: float = 0.2
    dropout: float = 0.0
    batch_norm: bool = False
    bias: bool = True


@dataclass(frozen=True)
class LayerPlan:
    """A CNN for square images: its steps, then its head.

    Attributes:
        in_channels: channels of the input images.
        image_size: side of the square input images (every pool halves it; it must divide evenly).
        steps: the feature extractor, in order.
        head: the dense part.
        num_classes: number of logits.
    """

    in_channels: int
    image_size: int
    steps: tuple[Step, ...]
    head: Head
    num_classes: int

    def __post_init__(self) -> None:
        size = self.image_size
        for step in self.steps:
            if isinstance(step, Pool):
                if size % 2:
                    raise ValueError(f"a 2x2 pool of stride 2 needs an even side; this plan's maps are {size}x{size} "
                                     f"there (images of side {self.image_size})")
                size //= 2

    @property
    def stages(self) -> int:
        """Number of pools."""
        return sum(isinstance(step, Pool) for step in self.steps)

    @property
    def feature_size(self) -> int:
        """Side of the feature maps after the last step."""
        return self.image_size // 2**self.stages

    @property
    def channels(self) -> int:
        """Channels after the last step."""
        convs = [step for step in self.steps if isinstance(step, Conv)]
        return convs[-1].out_channels if convs else self.in_channels
