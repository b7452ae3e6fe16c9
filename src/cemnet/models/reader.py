"""Reading a user's CNN: ``from_cnn`` (its trainable CEMNet twin) and ``read_plan`` (its layer plan).

The CNN's forward is read with ``torch.fx`` symbolic tracing: every module
call, function call (``F.relu``, ``F.max_pool2d``, ``torch.flatten``, ...)
and tensor method (``x.view(x.size(0), -1)``) it makes, in order. Each must
map onto a step of a :class:`~cemnet.models.plan.LayerPlan`, and the steps
must form one chain from the input to the logits; anything else (a residual
``x + f(x)``, a strided or dilated conv, average pooling, an unknown module)
refuses the whole network in one ``ValueError`` that names the call's path,
its type and the reason, before anything is built. The plan is then checked
by replaying it: the CNN built from the plan, given the user's weights, must
compute the user's model's output on an example batch. So a network is
converted whole or refused, never with a step dropped.

Supported, in the feature extractor (before the flatten):

=========================================================  =====================================
the CNN's layer or call                                    becomes
=========================================================  =====================================
``nn.Conv2d``: stride 1, "same" zero padding, odd square   :class:`~cemnet.nn.SpectralConv2d`,
kernel, dilation 1, groups 1, bias or not                  initialised from the conv's kernel
``nn.BatchNorm2d`` (affine, running statistics)            :class:`~cemnet.nn.SpectralBatchNorm2d`
``nn.ReLU``, ``nn.LeakyReLU``, ``F.relu``,                 the approximated Leaky ReLU (or the
``F.leaky_relu``, ``torch.relu``, ``x.relu()``             ``nonlinearity`` option's choice)
``nn.Dropout``, ``nn.Dropout2d``, ``F.dropout``            :class:`~cemnet.nn.SpectralDropout`
``nn.MaxPool2d(2)``, ``F.max_pool2d(x, 2)``                :class:`~cemnet.nn.SpectralMaxPool2d`
``nn.Identity``                                            nothing (it computes nothing)
=========================================================  =====================================

Then one flatten (``nn.Flatten``, ``torch.flatten(x, 1)``, ``x.flatten(1)``,
``x.view(x.size(0), -1)`` or ``x.reshape(...)`` to ``(B, features)``) and
the dense part, ``[Linear, BatchNorm1d?, ReLU/LeakyReLU, Dropout?]`` per
hidden layer (all alike), then a final ``Linear``: it becomes the
:class:`~cemnet.nn.TwoBranchHead` with the CNN's hidden widths.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from cemnet import nn as cnn
from cemnet.models import plan
from cemnet.models.convnets import LEAKY_SIGMA, CEMNet, ConvNet, fixation_storage
from cemnet.models.plan import LayerPlan

SUPPORTED = ("Conv2d (stride 1, 'same' zero padding, odd square kernel, dilation 1, groups 1), BatchNorm2d, "
             "ReLU/LeakyReLU (module or F.relu/F.leaky_relu/torch.relu), Dropout/Dropout2d/F.dropout, "
             "MaxPool2d(2)/F.max_pool2d(x, 2), Identity; then one flatten (Flatten, torch.flatten(x, 1), x.view(B, -1)) "
             "and Linear[, BatchNorm1d], ReLU/LeakyReLU[, Dropout] per hidden layer, then a final Linear")


@dataclass
class _Call:
    """One step of the traced forward: where it comes from, what it is, and the modules holding its weights."""

    path: str
    kind: str
    step: Any  # a plan step, "flatten", ("linear", nn.Linear), ("batch_norm1d", nn.BatchNorm1d), or None
    module: nn.Module | None = None


def _refuse(path: str, kind: str, reason: str) -> ValueError:
    return ValueError(f"from_cnn: cannot convert {path} ({kind}): {reason}. Supported: {SUPPORTED}")


def _read_conv(path: str, conv: nn.Conv2d) -> plan.Conv:
    k = conv.kernel_size[0]
    problems = []
    if conv.kernel_size != (k, k) or k % 2 == 0:
        problems.append(f"kernel {tuple(conv.kernel_size)} is not square and odd")
    if conv.stride != (1, 1):
        problems.append(f"stride {tuple(conv.stride)} is not 1")
    if conv.dilation != (1, 1):
        problems.append(f"dilation {tuple(conv.dilation)} is not 1")
    if conv.groups != 1:
        problems.append(f"groups={conv.groups} (grouped convolution) is not 1")
    if conv.padding != (k // 2, k // 2):
        problems.append(f"padding {conv.padding if isinstance(conv.padding, str) else tuple(conv.padding)} is not "
                        f"'same' ({k // 2}, {k // 2}) for a {k}x{k} kernel")
    if conv.padding_mode != "zeros":
        problems.append(f"padding_mode {conv.padding_mode!r} is not zero padding")
    if problems:
        raise _refuse(path, "Conv2d", "; ".join(problems))
    return plan.Conv(conv.in_channels, conv.out_channels, k, conv.bias is not None)


def _read_module(path: str, module: nn.Module) -> _Call:
    kind = type(module).__name__
    if type(module) is nn.Conv2d:
        return _Call(path, kind, _read_conv(path, module), module)
    if type(module) is nn.BatchNorm2d:
        if not (module.affine and module.track_running_stats and module.momentum is not None):
            raise _refuse(path, kind, "a batch norm without affine parameters, running statistics or momentum")
        return _Call(path, kind, plan.BatchNorm(module.num_features, module.eps, module.momentum), module)
    if type(module) is nn.ReLU:
        return _Call(path, kind, plan.Activation(0.0))
    if type(module) is nn.LeakyReLU:
        return _Call(path, kind, plan.Activation(module.negative_slope))
    if type(module) in (nn.Dropout, nn.Dropout2d):
        return _Call(path, kind, plan.Dropout(module.p))
    if type(module) is nn.MaxPool2d:
        window = (module.kernel_size, module.stride, module.padding, module.dilation, module.ceil_mode)
        if window not in ((2, 2, 0, 1, False), ((2, 2), (2, 2), 0, 1, False)):
            raise _refuse(path, kind, "only a 2x2 max pool of stride 2, no padding, is supported")
        return _Call(path, kind, plan.Pool())
    if type(module) is nn.Flatten:
        if module.start_dim != 1 or module.end_dim != -1:
            raise _refuse(path, kind, "only a flatten of every dimension after the batch")
        return _Call(path, kind, "flatten")
    if type(module) is nn.Linear:
        return _Call(path, kind, ("linear", module), module)
    if type(module) is nn.BatchNorm1d:
        if not (module.affine and module.track_running_stats):
            raise _refuse(path, kind, "a batch norm without affine parameters or running statistics")
        return _Call(path, kind, ("batch_norm1d", module), module)
    if type(module) is nn.Identity:
        return _Call(path, kind, None)
    reason = {
        nn.AvgPool2d: "average pooling has no frequency-domain counterpart here",
        nn.AdaptiveAvgPool2d: "adaptive pooling has no frequency-domain counterpart here",
        nn.MultiheadAttention: "attention is not a convolutional step",
    }.get(type(module), "this layer is not a step cemnet can map")
    raise _refuse(path, kind, reason)


def _argument(node: fx.Node, index: int, name: str, default: Any) -> Any:
    if len(node.args) > index:
        return node.args[index]
    return node.kwargs.get(name, default)


def _read_function(path: str, node: fx.Node) -> _Call:
    target = node.target
    name = f"method .{target}()" if node.op == "call_method" else f"function {getattr(target, '__name__', target)}"
    if target in (F.relu, torch.relu) or (node.op == "call_method" and target in ("relu", "relu_")):
        return _Call(path, name, plan.Activation(0.0))
    if target is F.leaky_relu or (node.op == "call_method" and target == "leaky_relu"):
        return _Call(path, name, plan.Activation(float(_argument(node, 1, "negative_slope", 0.01))))
    if target is F.dropout:
        return _Call(path, name, plan.Dropout(float(_argument(node, 1, "p", 0.5))))
    if target is F.max_pool2d:
        size = _argument(node, 1, "kernel_size", None)
        stride = _argument(node, 2, "stride", None)
        padding = _argument(node, 3, "padding", 0)
        if size not in (2, (2, 2)) or stride not in (None, 2, (2, 2)) or padding not in (0, (0, 0)):
            raise _refuse(path, name, "only a 2x2 max pool of stride 2, no padding, is supported")
        return _Call(path, name, plan.Pool())
    if target is torch.flatten or (node.op == "call_method" and target == "flatten"):
        if _argument(node, 1, "start_dim", 0) != 1 or _argument(node, 2, "end_dim", -1) != -1:
            raise _refuse(path, name, "only a flatten of every dimension after the batch")
        return _Call(path, name, "flatten")
    if node.op == "call_method" and target in ("view", "reshape"):
        return _Call(path, name, "flatten")  # its result is checked to be (B, features) by the replay
    if target in (operator.add, operator.iadd, torch.add) or (node.op == "call_method" and target in ("add", "add_")):
        raise _refuse(path, name, "a residual addition: the network is not a chain of layers")
    if target in (torch.cat, torch.concat):
        raise _refuse(path, name, "a concatenation of branches: the network is not a chain of layers")
    raise _refuse(path, name, "this call is not a step cemnet can map")


def _trace(model: nn.Module) -> list[_Call]:
    """The forward's calls in order, each checked to take the previous one's output as its only tensor."""
    try:
        graph = fx.symbolic_trace(model).graph
    except Exception as error:  # fx raises many kinds for code it cannot follow (data-dependent branches, ...)
        raise ValueError(f"from_cnn: cannot read {type(model).__name__}'s forward with torch.fx ({type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}); write it as a chain of layers and "
                         f"functions. Supported: {SUPPORTED}") from None
    live, stack = set(), [next(node for node in graph.nodes if node.op == "output")]
    while stack:  # what the output depends on; the rest (input checks and their arguments) computes nothing it sees
        node = stack.pop()
        if node not in live:
            live.add(node)
            stack.extend(node.all_input_nodes)
    calls: list[_Call] = []
    current: fx.Node | None = None
    for node in graph.nodes:
        if node not in live and node.op != "placeholder":
            continue
        if node.op == "placeholder":
            if current is not None:
                raise ValueError(f"from_cnn: {type(model).__name__}'s forward takes more than one input")
            current = node
            continue
        if node.op == "output":
            if node.args[0] is not current:
                raise ValueError(f"from_cnn: {type(model).__name__}'s forward returns more than its last layer's "
                                 f"output")
            break
        if node.op == "call_method" and node.target in ("size", "dim"):
            continue  # shape queries (x.view(x.size(0), -1)): no computation on the activations
        if node.op == "get_attr":
            raise _refuse(str(node.target), "tensor attribute", "a tensor used outside a layer")
        path = node.target if node.op == "call_module" else f"{type(model).__name__}.forward's {node.name}"
        call = (_read_module(path, model.get_submodule(node.target)) if node.op == "call_module"
                else _read_function(path, node))
        tensors = [arg for arg in node.all_input_nodes
                   if not (arg.op == "call_method" and arg.target in ("size", "dim"))]
        if tensors != [current]:
            raise _refuse(path, call.kind, "it does not take the previous layer's output as its only input "
                                           "(a skip connection or a branch)")
        calls.append(call)
        current = node
    return calls


def read_plan(model: nn.Module, image_size: int | None = None) -> tuple[LayerPlan, list[nn.Module | None]]:
    """The :class:`LayerPlan` of a CNN, and for each of its steps the module holding its weights (or ``None``).

    ``image_size`` defaults to the side that the first ``Linear``'s input size implies.

    Raises:
        ValueError: a layer or call that cannot be mapped, naming it, its type and why.
    """
    calls = [call for call in _trace(model) if call.step is not None]
    flat = [i for i, call in enumerate(calls) if call.step == "flatten"]
    if len(flat) != 1:
        where = ", ".join(calls[i].path for i in flat) or "none found"
        raise ValueError(f"from_cnn: expected exactly one flatten between the convolutions and the dense layers "
                         f"({where}). Supported: {SUPPORTED}")
    features, dense = calls[: flat[0]], calls[flat[0] + 1:]
    for call in features:
        if isinstance(call.step, tuple):
            raise _refuse(call.path, call.kind, "a dense layer before the flatten")
    convs = [call.step for call in features if isinstance(call.step, plan.Conv)]
    if not convs:
        raise ValueError(f"from_cnn: {type(model).__name__} has no Conv2d before its flatten: nothing to train in the "
                         f"frequency domain")
    head, head_modules = _read_head(dense)
    steps = tuple(call.step for call in features)
    pools = sum(isinstance(step, plan.Pool) for step in steps)
    first_linear = head_modules[0]
    if image_size is None:
        side = math.isqrt(first_linear.in_features // convs[-1].out_channels)
        image_size = side * 2**pools
    layer_plan = LayerPlan(convs[0].in_channels, image_size, steps, head[0], head[1])
    expected = layer_plan.channels * layer_plan.feature_size**2
    if first_linear.in_features != expected:
        raise ValueError(f"from_cnn: the first Linear takes {first_linear.in_features} features, but {image_size}x"
                         f"{image_size} images give {layer_plan.channels} x {layer_plan.feature_size}^2 = {expected} "
                         f"after the convolutions; pass an example batch of the images the CNN is built for")
    return layer_plan, [call.module for call in features]


def _read_head(dense: list[_Call]) -> tuple[tuple[plan.Head, int], list[nn.Linear]]:
    """The dense part as ``(Head, num_classes)`` and its Linear layers, or a refusal naming what does not fit."""
    linears = [i for i, call in enumerate(dense) if isinstance(call.step, tuple) and call.step[0] == "linear"]
    if not linears or linears[-1] != len(dense) - 1:
        where = dense[-1].path if dense else "nothing after the flatten"
        raise ValueError(f"from_cnn: the network must end with a Linear after the flatten ({where} ends it). "
                         f"Supported: {SUPPORTED}")
    if linears[0] != 0:
        call = dense[0]
        raise _refuse(call.path, call.kind, "the dense part must start with a Linear right after the flatten")
    blocks = []
    for start, end in zip(linears, linears[1:]):
        between = dense[start + 1: end]
        batch_norm = bool(between) and isinstance(between[0].step, tuple) and between[0].step[0] == "batch_norm1d"
        rest = between[1:] if batch_norm else between
        if not rest or not isinstance(rest[0].step, plan.Activation):
            where = dense[start]
            raise _refuse(where.path, where.kind, "each hidden Linear must be followed by [BatchNorm1d,] "
                                                  "ReLU/LeakyReLU[, Dropout]")
        dropout = rest[1].step.p if len(rest) == 2 and isinstance(rest[1].step, plan.Dropout) else 0.0
        if len(rest) > 2 or (len(rest) == 2 and not isinstance(rest[1].step, plan.Dropout)):
            raise _refuse(rest[-1].path, rest[-1].kind, "a hidden layer holds more than [BatchNorm1d,] "
                                                        "ReLU/LeakyReLU[, Dropout]")
        linear = dense[start].step[1]
        blocks.append((linear.out_features, batch_norm, rest[0].step.negative_slope, dropout, linear.bias is not None))
    if len({block[1:] for block in blocks}) > 1:
        raise ValueError(f"from_cnn: the hidden layers differ in batch norm, activation, dropout or bias "
                         f"({blocks}); the two-branch head needs them alike")
    _, batch_norm, slope, dropout, bias = blocks[0] if blocks else (0, False, 0.2, 0.0, True)
    head = plan.Head(tuple(block[0] for block in blocks), slope, dropout, batch_norm, bias)
    modules = [dense[i].step[1] for i in linears]
    return (head, modules[-1].out_features), modules


def cnn_of_plan(layer_plan: LayerPlan, model: nn.Module, sources: list[nn.Module | None]) -> ConvNet:
    """The CNN built from a plan, holding the weights (and batch-norm statistics) of the model it was read from."""
    parameter = next(model.parameters())
    twin = ConvNet(layer_plan).to(parameter.device, parameter.dtype)
    for layer, source in zip(twin.features, sources):
        if source is not None:
            layer.load_state_dict(source.state_dict())
    dense = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.BatchNorm1d))]
    mine = [m for m in twin.classifier.modules() if isinstance(m, (nn.Linear, nn.BatchNorm1d))]
    for layer, source in zip(mine, _in_call_order(model, dense)):
        layer.load_state_dict(source.state_dict())
    return twin


def _in_call_order(model: nn.Module, modules: list[nn.Module]) -> list[nn.Module]:
    order = [model.get_submodule(node.target) for node in fx.symbolic_trace(model).graph.nodes
             if node.op == "call_module"]
    return [module for module in order if any(module is m for m in modules)]


def _check_replay(model: nn.Module, twin: ConvNet, example: torch.Tensor) -> None:
    """The CNN rebuilt from the plan must compute the model's own output: nothing was dropped or added."""
    was_training = model.training
    model.eval()
    twin.eval()
    with torch.no_grad():
        expected, got = model(example), twin(example)
    model.train(was_training)
    if expected.shape != got.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * expected.abs().max()):
        raise ValueError(f"from_cnn: the layer plan read from {type(model).__name__} does not reproduce its output on "
                         f"the example batch (largest difference {(got - expected).abs().max().item():.3g}); its "
                         f"forward computes something the plan lacks. Supported: {SUPPORTED}")


def from_cnn(model: nn.Module, example: torch.Tensor | None = None, *, weight_fixation: bool | str = True,
             fixed_stages: int | None = None, conj: str = "input", storage: str = "frequency",
             leaky_sigma: float = LEAKY_SIGMA, noise_in_eval: bool = False, half_spectrum: bool = False,
             nonlinearity: str = "approximated", spatial_stages: int = 0) -> CEMNet:
    """The trainable CEMNet twin of a CNN, its convolutions initialised from the CNN's kernels.

    Args:
        model: a CNN whose forward is a chain of the layers and calls in this
            module's table (``nn.Sequential``, nested, or a module of your own
            whose forward calls its layers and ``F.relu``, ``F.max_pool2d``,
            ``torch.flatten``, ``x.view`` in order).
        example: a batch of the images it is built for, ``(B, C, S, S)``;
            default a batch of zeros of the size the first ``Linear`` implies.
            The twin is checked against the model's output on it.
        weight_fixation, fixed_stages, conj, storage, leaky_sigma, noise_in_eval,
        half_spectrum, nonlinearity, spatial_stages: the CEMNet options of the
            presets (``cemnet models`` lists them); ``fixed_stages=None`` fixes
            every stage.

    Returns:
        a :class:`~cemnet.models.CEMNet` whose ``spec`` is the plan read from
        ``model``. Each ``SpectralConv2d`` holds its conv's kernel and bias:
        with ``conj="weight"`` it computes that conv on circular padding.

    Raises:
        ValueError: a layer or call it cannot map, naming its path, type and
            the reason, with what is supported; nothing is built.
    """
    image_size = example.shape[-1] if example is not None else None
    layer_plan, sources = read_plan(model, image_size)
    if example is None:
        parameter = next(model.parameters())
        example = torch.zeros(2, layer_plan.in_channels, layer_plan.image_size, layer_plan.image_size,
                              device=parameter.device, dtype=parameter.dtype)
    _check_replay(model, cnn_of_plan(layer_plan, model, sources), example)
    storage, fixation = fixation_storage(weight_fixation, storage)
    twin = CEMNet(layer_plan, conj=conj, storage=storage, fixation=fixation, fixed_stages=fixed_stages,
                  leaky_sigma=leaky_sigma, noise_in_eval=noise_in_eval, half_spectrum=half_spectrum,
                  nonlinearity=nonlinearity, spatial_stages=spatial_stages)
    parameter = next(model.parameters())
    twin.to(parameter.device, parameter.dtype)  # before the kernels, so that a float64 CNN's land exactly
    _load_kernels(twin, sources)
    return twin


def _load_kernels(twin: CEMNet, sources: list[nn.Module | None]) -> None:
    """Each conv's kernel and bias into its twin (a SpectralConv2d, or a Conv2d of a spatial stage)."""
    convs = [source for source in sources if isinstance(source, nn.Conv2d)]
    targets = [m for m in twin.features if isinstance(m, (nn.Conv2d, cnn.SpectralConv2d))]
    for target, source in zip(targets, convs, strict=True):
        if isinstance(target, nn.Conv2d):
            target.load_state_dict(source.state_dict())
            continue
        target.set_spatial_kernel(source.weight.detach())
        if source.bias is not None:
            with torch.no_grad():
                target.bias.copy_(source.bias)

