"""The paper's networks (Sec. 4): CNNs and the CEMNets that mirror them layer for layer.

A :class:`NetSpec` states a preset's architecture in the paper's terms and
writes it out as a :class:`~cemnet.models.plan.LayerPlan`; :class:`ConvNet`
builds the spatial CNN of a plan and :class:`CEMNet` its frequency-domain
twin, step for step (the table in :mod:`cemnet.models.plan`).
:func:`cemnet.from_cnn` reads the plan of a user's CNN and builds the same.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
from torch import nn

from cemnet import nn as cnn
from cemnet.models import plan
from cemnet.models._registry import register_model
from cemnet.models.plan import LayerPlan
from cemnet.spectral import SpectralGrid


@dataclass(frozen=True)
class NetSpec:
    """A preset's architecture, in the paper's terms: uniform blocks, stages ending in a pool, an MLP.

    :meth:`plan` writes it out as the :class:`~cemnet.models.plan.LayerPlan`
    that the CNN and the CEMNet are built from.

    Attributes:
        in_channels: channels of the input images.
        image_size: side of the square input images.
        stages: conv widths per stage; every stage ends with a 2x2 max pool.
        kernel_size: side of every conv kernel ("same" padding).
        hidden: widths of the hidden fully connected layers.
        num_classes: number of logits.
        negative_slope: of every Leaky ReLU (paper: 0.2).
        dropout: rate ``p`` after every conv and FC layer (paper: 0.5); 0 disables it.
        batch_norm: batch norm after every conv and FC layer.
    """

    in_channels: int
    image_size: int
    stages: tuple[tuple[int, ...], ...]
    kernel_size: int
    hidden: tuple[int, ...]
    num_classes: int = 10
    negative_slope: float = 0.2
    dropout: float = 0.5
    batch_norm: bool = True

    @property
    def feature_size(self) -> int:
        """Side of the feature maps after the last pool."""
        return self.image_size // 2 ** len(self.stages)

    @property
    def features(self) -> int:
        """Flattened features after the last pool (per part, for a CEMNet)."""
        return self.stages[-1][-1] * self.feature_size**2

    def ablate(self, batch_norm: bool, dropout: bool) -> NetSpec:
        """The same architecture without batch norm and/or dropout."""
        return replace(self, batch_norm=self.batch_norm and batch_norm, dropout=self.dropout if dropout else 0.0)

    def sized(self, in_channels: int | None = None, image_size: int | None = None,
              num_classes: int | None = None) -> NetSpec:
        """The same architecture for other images: channels, side (a multiple of 2 per pool) and class count.

        Raises:
            ValueError: a side the pools do not divide, naming the sides that fit.
        """
        size = image_size or self.image_size
        factor = 2 ** len(self.stages)
        if size % factor or size < factor:
            below, above = size // factor * factor, (size // factor + 1) * factor
            fits = f"{below} or {above}" if below else f"{above}"
            raise ValueError(f"this layer plan pools {len(self.stages)} times, so it takes images whose side is a "
                             f"multiple of {factor}; {size} is not (sides that fit nearby: {fits}; --image-size)")
        return replace(self, in_channels=in_channels or self.in_channels, image_size=size,
                       num_classes=num_classes or self.num_classes)

    def plan(self) -> LayerPlan:
        """Conv, batch norm, Leaky ReLU and dropout per conv, a pool per stage; the MLP as the head."""
        steps: list[plan.Step] = []
        channels = self.in_channels
        for widths in self.stages:
            for width in widths:
                steps.append(plan.Conv(channels, width, self.kernel_size, bias=not self.batch_norm))
                if self.batch_norm:
                    steps.append(plan.BatchNorm(width))
                steps.append(plan.Activation(self.negative_slope))
                if self.dropout:
                    steps.append(plan.Dropout(self.dropout))
                channels = width
            steps.append(plan.Pool())
        head = plan.Head(self.hidden, self.negative_slope, self.dropout, self.batch_norm, bias=not self.batch_norm)
        return LayerPlan(self.in_channels, self.image_size, tuple(steps), head, self.num_classes)


def check_images(x: torch.Tensor, spec: NetSpec | LayerPlan, model: str) -> None:
    """Raise a ValueError unless ``x`` is a real ``(B, C, H, W)`` batch of the spec's shape."""
    expected = (spec.in_channels, spec.image_size, spec.image_size)
    if x.dim() != 4 or tuple(x.shape[1:]) != expected or x.is_complex():
        raise ValueError(
            f"{model} expects real images of shape (B, {', '.join(map(str, expected))}), "
            f"got {'complex ' if x.is_complex() else ''}shape {tuple(x.shape)}"
        )


# A leaf of torch.fx tracing (cemnet.from_cnn reads ConvNets too): a check of the input, not a step of the network.
torch.fx.wrap("check_images")


def spatial_layer(step: plan.Step) -> nn.Module:
    """The ``torch.nn`` layer of a step: the CNN's, and a CEMNet's spatial stages'."""
    if isinstance(step, plan.Conv):
        return nn.Conv2d(step.in_channels, step.out_channels, step.kernel_size, padding=step.kernel_size // 2,
                         bias=step.bias)
    if isinstance(step, plan.BatchNorm):
        return nn.BatchNorm2d(step.channels, step.eps, step.momentum)
    if isinstance(step, plan.Activation):
        return nn.LeakyReLU(step.negative_slope)
    if isinstance(step, plan.Dropout):
        return nn.Dropout(step.p)
    return nn.MaxPool2d(2)


def he_normal_convs(model: nn.Module) -> None:
    """He-normal ``Conv2d`` kernels (as the paper initialises its kernels) and zero biases."""
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_in", nonlinearity="relu")
            if module.bias is not None:
                nn.init.zeros_(module.bias)


class ConvNet(nn.Module):
    """The spatial CNN of a layer plan: its steps as ``torch.nn`` layers, then flatten, MLP, ``Linear``.

    Args:
        spec: the architecture, a :class:`NetSpec` or a :class:`~cemnet.models.plan.LayerPlan`.

    Shape:
        real ``(B, C, S, S)`` -> logits ``(B, num_classes)``.
    """

    def __init__(self, spec: NetSpec | LayerPlan) -> None:
        super().__init__()
        self.spec = spec
        layers = spec.plan() if isinstance(spec, NetSpec) else spec
        self.features = nn.Sequential(*(spatial_layer(step) for step in layers.steps))
        features, head = layers.channels * layers.feature_size**2, layers.head
        self.classifier = nn.Sequential(
            nn.Flatten(),
            cnn.mlp_branch(features, head.hidden, head.negative_slope, head.dropout, head.batch_norm,
                           bias=head.bias),
            nn.Linear(head.hidden[-1] if head.hidden else features, layers.num_classes),
        )
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He-normal convs (as the paper initialises its kernels); PyTorch defaults elsewhere."""
        he_normal_convs(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.spec, type(self).__name__)
        return self.classifier(self.features(x))


# The approximated Leaky ReLU's sigma, p / 4 with the paper's p = 0.5 (Sec. 3.1.4); it does not follow the
# dropout rate, so the noise stays when dropout is ablated.
LEAKY_SIGMA = 0.5 / 4
NONLINEARITIES = ("approximated", "at-pools", "every-layer", "split")


class CEMNet(nn.Module):
    """The frequency-domain twin of a layer plan (paper Sec. 3.2, Algorithm 1).

    Args:
        spec: the architecture, a :class:`NetSpec` or a :class:`~cemnet.models.plan.LayerPlan`.
        conj: ``"input"`` (paper) or ``"weight"`` (every conv exactly a circular ``conv2d``).
        storage: ``"frequency"`` (the paper: full spectra + Weight Fixation),
            ``"spatial"`` (real ``K x K`` kernels, transformed in every forward)
            or ``"free"`` (frequency weights without fixation: the "-WF" rows).
        fixation: how ``"frequency"`` layers keep their support, ``"weights"``
            (the paper) or ``"gradient"`` (see :class:`~cemnet.nn.SpectralConv2d`).
        fixed_stages: with ``storage="frequency"``, Weight Fixation covers the
            first ``fixed_stages`` stages and the rest are ``"free"`` (the paper
            fixes the first 3 of 5 CIFAR blocks); ``None`` fixes all.
        leaky_sigma: standard deviation of the approximated Leaky ReLU.
            Default: :data:`LEAKY_SIGMA` (the authors' code uses ``0.5 / 6``).
        noise_in_eval: keep the Leaky ReLU noise at evaluation (authors' code).
        half_spectrum: the fast variant on ``rfft2`` half spectra (see
            :mod:`cemnet.spectral`); the head then sees ``W // 2 + 1`` columns.
        nonlinearity: what an activation step becomes. ``"approximated"`` (the
            paper): multiplicative noise (:class:`~cemnet.nn.SpectralLeakyReLU`).
            ``"at-pools"``: the noise as well, and a real Leaky ReLU inside
            each pool's round trip (no extra transform). ``"every-layer"``: a
            real Leaky ReLU through the spatial domain in place of each
            activation (:class:`~cemnet.nn.SpatialLeakyReLU`: the CNN's own
            placement, two transforms each). ``"split"``: a Leaky ReLU on the
            real and the imaginary parts (:class:`~cemnet.nn.SplitLeakyReLU`).
        spatial_stages: the first ``spatial_stages`` stages stay the CNN's own
            spatial layers, and the transform to the frequency domain comes
            after them (a time/frequency mixture). Default: 0.

    Shape:
        real ``(B, C, S, S)`` -> logits ``(B, num_classes)``.
    """

    def __init__(self, spec: NetSpec | LayerPlan, *, conj: str = "input", storage: str = "frequency",
                 fixation: str = "weights", fixed_stages: int | None = None, leaky_sigma: float = LEAKY_SIGMA,
                 noise_in_eval: bool = False, half_spectrum: bool = False, nonlinearity: str = "approximated",
                 spatial_stages: int = 0) -> None:
        super().__init__()
        self.spec = spec
        layers = spec.plan() if isinstance(spec, NetSpec) else spec
        if nonlinearity not in NONLINEARITIES:
            raise ValueError(f"nonlinearity must be one of {list(NONLINEARITIES)}, got {nonlinearity!r}")
        if not (isinstance(spatial_stages, int) and 0 <= spatial_stages <= layers.stages):
            raise ValueError(f"spatial_stages must be a number of stages from 0 to {layers.stages}, "
                             f"got {spatial_stages!r}")
        modules: list[nn.Module] = []
        stage, size, grid = 0, layers.image_size, None
        slope = 0.2  # of the stage's last activation: a pool's Leaky ReLU under nonlinearity="at-pools"
        for step in layers.steps:
            if isinstance(step, plan.Activation):
                slope = step.negative_slope
            if stage < spatial_stages:
                modules.append(spatial_layer(step))
            else:
                if grid is None:
                    modules.append(cnn.ToFrequency(half_spectrum))
                    grid = SpectralGrid.of(size, half_spectrum)
                fixed = fixed_stages is None or stage < fixed_stages
                modules.append(_spectral_layer(step, grid, conj, "free" if storage == "frequency" and not fixed
                                               else storage, fixation, leaky_sigma, noise_in_eval, nonlinearity,
                                               slope))
            if isinstance(step, plan.Pool):
                stage, size = stage + 1, size // 2
                grid = grid.pooled(2) if grid is not None else None
        if grid is None:  # every stage spatial: the transform comes last
            modules.append(cnn.ToFrequency(half_spectrum))
            grid = SpectralGrid.of(size, half_spectrum)
        self.features = cnn.SpectralSequential(*modules)
        he_normal_convs(self.features)  # the spatial stages' kernels as the CNN's
        head = layers.head
        self.head = cnn.TwoBranchHead(layers.channels * grid.height * grid.columns, head.hidden, layers.num_classes,
                                      head.negative_slope, head.dropout, head.batch_norm)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_images(x, self.spec, type(self).__name__)
        return self.head(self.features(x))


def _spectral_layer(step: plan.Step, grid: SpectralGrid, conj: str, storage: str, fixation: str, leaky_sigma: float,
                    noise_in_eval: bool, nonlinearity: str, pool_slope: float) -> nn.Module:
    """The frequency-domain layer of a step on ``grid``."""
    if isinstance(step, plan.Conv):
        return cnn.SpectralConv2d(step.in_channels, step.out_channels, step.kernel_size, grid.size, conj=conj,
                                  storage=storage, fixation=fixation, bias=step.bias, half=grid.half)
    if isinstance(step, plan.BatchNorm):
        return cnn.SpectralBatchNorm2d(step.channels, step.eps, step.momentum)
    if isinstance(step, plan.Activation):
        if nonlinearity == "every-layer":
            return cnn.SpatialLeakyReLU(step.negative_slope, grid.size, half=grid.half)
        if nonlinearity == "split":
            return cnn.SplitLeakyReLU(step.negative_slope)
        return cnn.SpectralLeakyReLU(sigma=leaky_sigma, active_in_eval=noise_in_eval)
    if isinstance(step, plan.Dropout):
        return cnn.SpectralDropout(step.p)
    return cnn.SpectralMaxPool2d(2, grid.size, half=grid.half,
                                 negative_slope=pool_slope if nonlinearity == "at-pools" else None)


LENET5 = NetSpec(in_channels=1, image_size=28, stages=((6,), (16,)), kernel_size=5, hidden=(120, 84))
VGG_SMALL = NetSpec(
    in_channels=3, image_size=32, stages=((64,), (128,), (256,), (512,), (512,)), kernel_size=3, hidden=(512,)
)
VGG_LARGE = replace(VGG_SMALL, stages=((64, 64), (128, 128), (256, 256), (512, 512, 512), (512, 512, 512)))


# The options that take one of a few values, as `cemnet models` lists them (the rest are numbers or booleans).
OPTION_CHOICES = {
    "weight_fixation": "True (the paper: project the weights after each step), 'gradient' (also project the "
                       "gradients before it), False (frequency weights left free)",
    "fixed_stages": "the number of leading stages under Weight Fixation, the rest left free (the paper: 3 of 5 "
                    "CIFAR blocks, both of LeNet-5's)",
    "storage": "'frequency' (the paper's spectra) or 'spatial' (K x K kernels, transformed in every forward)",
    "conj": "'input' (the paper) or 'weight' (every conv exactly a circular conv2d)",
    "nonlinearity": "'approximated' (the paper's noise), 'at-pools' (and a real Leaky ReLU in each pool's round "
                    "trip), 'every-layer' (a real Leaky ReLU through the spatial domain for each activation), "
                    "'split' (a Leaky ReLU on the real and imaginary parts)",
    "spatial_stages": "the number of leading stages kept as the CNN's spatial layers before the transform (0: none)",
    "in_channels, image_size, num_classes": "the images and classes (None: the paper's data set's); set from the "
                                            "data by cemnet train --dataset folder:PATH",
}


def _cemnet_preset(spec: NetSpec, fixed_stages: int | None, summary: str):
    """A registry factory for the CEMNet of ``spec``; its keywords are the preset options."""
    paper_fixed_stages = fixed_stages

    def factory(*, weight_fixation: bool | str = True, fixed_stages: int = paper_fixed_stages,
                batch_norm: bool = True, dropout: bool = True, conj: str = "input", storage: str = "frequency",
                leaky_sigma: float = LEAKY_SIGMA, noise_in_eval: bool = False, half_spectrum: bool = False,
                nonlinearity: str = "approximated", spatial_stages: int = 0, in_channels: int | None = None,
                image_size: int | None = None, num_classes: int | None = None) -> CEMNet:
        storage, fixation = fixation_storage(weight_fixation, storage)
        if not (isinstance(fixed_stages, int) and 0 <= fixed_stages <= len(spec.stages)):
            raise ValueError(f"fixed_stages must be a number of stages from 0 to {len(spec.stages)}, "
                             f"got {fixed_stages!r}")
        return CEMNet(spec.ablate(batch_norm, dropout).sized(in_channels, image_size, num_classes), conj=conj, storage=storage, fixation=fixation,
                      fixed_stages=fixed_stages, leaky_sigma=leaky_sigma, noise_in_eval=noise_in_eval,
                      half_spectrum=half_spectrum, nonlinearity=nonlinearity, spatial_stages=spatial_stages)

    factory.__doc__ = summary
    return factory


def fixation_storage(weight_fixation: bool | str, storage: str) -> tuple[str, str]:
    """The layers' ``(storage, fixation)`` of the model options ``weight_fixation`` and ``storage``.

    ``weight_fixation``: ``True`` (the paper: project the weights after each
    step), ``"gradient"`` (also project the gradients before it), ``False``
    (frequency weights left free: the "-WF" rows).
    """
    choices = (True, False, "gradient")
    if weight_fixation not in choices or not isinstance(weight_fixation, (bool, str)):
        raise ValueError(f"weight_fixation must be one of {list(choices)}, got {weight_fixation!r}")
    if storage not in ("frequency", "spatial"):
        raise ValueError(f"storage must be 'frequency' or 'spatial' (weight_fixation=false gives the frequency "
                         f"storage without fixation), got {storage!r}")
    if weight_fixation is not True and storage != "frequency":
        raise ValueError(f"weight_fixation={weight_fixation!r} applies to frequency weights; it contradicts "
                         f"storage={storage!r}")
    if weight_fixation is False:
        return "free", "weights"
    return storage, "gradient" if weight_fixation == "gradient" else "weights"


@register_model(dataset="mnist")
def lenet5(*, batch_norm: bool = True, dropout: bool = True, in_channels: int | None = None,
           image_size: int | None = None, num_classes: int | None = None) -> ConvNet:
    """Modified LeNet-5 CNN (paper Sec. 4.2): 6@5x5 and 16@5x5 "same" convs, FC 784-120-84-10."""
    return ConvNet(LENET5.ablate(batch_norm, dropout).sized(in_channels, image_size, num_classes))


@register_model(dataset="cifar10")
def vgg_small(*, batch_norm: bool = True, dropout: bool = True, in_channels: int | None = None,
              image_size: int | None = None, num_classes: int | None = None) -> ConvNet:
    """Small VGG CNN (paper Sec. 4.3): one 3x3 conv per block, widths 64-512, FC 512."""
    return ConvNet(VGG_SMALL.ablate(batch_norm, dropout).sized(in_channels, image_size, num_classes))


@register_model(dataset="cifar10")
def vgg_large(*, batch_norm: bool = True, dropout: bool = True, in_channels: int | None = None,
              image_size: int | None = None, num_classes: int | None = None) -> ConvNet:
    """Large VGG CNN (paper Sec. 4.3): 2,2,2,3,3 3x3 convs per block, widths 64-512, FC 512."""
    return ConvNet(VGG_LARGE.ablate(batch_norm, dropout).sized(in_channels, image_size, num_classes))


register_model(dataset="mnist", twin="lenet5", name="cemnet-mnist")(
    _cemnet_preset(LENET5, len(LENET5.stages), "CEMNet twin of lenet5 (paper Table 1): Weight Fixation on every layer.")
)
register_model(dataset="cifar10", twin="vgg-small", name="cemnet-small")(
    _cemnet_preset(VGG_SMALL, 3, "Small CEMNet, twin of vgg-small (paper Table 2): Weight Fixation on the first 3 blocks.")
)
register_model(dataset="cifar10", twin="vgg-large", name="cemnet-large")(
    _cemnet_preset(VGG_LARGE, 3, "Large CEMNet, twin of vgg-large (paper Table 2): Weight Fixation on the first 3 blocks.")
)
