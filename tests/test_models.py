import copy

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_rel_close

from cemnet import nn as cnn
from cemnet.models import (
    CEMNet,
    ConvNet,
    NetSpec,
    count_parameters,
    create_model,
    list_models,
    model_info,
)

# Parameter counts written out from the architectures (paper Sec. 4), not read off the code.
# Convs/FCs followed by batch norm have no bias; a complex weight counts as two reals.
LENET_FC = 784 * 120 + 2 * 120 + 120 * 84 + 2 * 84  # one MLP branch: FC + BN, twice
FCNN_MNIST_CONVS = 2 * 6 * 28 * 28 + 6 + 2 * 16 * 6 * 14 * 14 + 16  # free complex weights and a bias each
EXPECTED_PARAMETERS = {
    "fcnn-mnist": FCNN_MNIST_CONVS + 2 * 16 * 7 * 7 * 120 + 2 * 120 + 120 * 84 + 2 * 84 + 84 * 10 + 10,
    "lenet5": 6 * 25 + 2 * 6 + 16 * 6 * 25 + 2 * 16 + LENET_FC + 84 * 10 + 10,
    "cemnet-mnist": 2 * 6 * 28 * 28 + 4 * 6 + 2 * 16 * 6 * 14 * 14 + 4 * 16 + 2 * LENET_FC + 168 * 10 + 10,
    "vgg-small": (
        9 * (3 * 64 + 64 * 128 + 128 * 256 + 256 * 512 + 512 * 512)
        + 2 * (64 + 128 + 256 + 512 + 512) + 512 * 512 + 2 * 512 + 512 * 10 + 10
    ),
    "cemnet-small": (
        2 * (32**2 * 3 * 64 + 16**2 * 64 * 128 + 8**2 * 128 * 256 + 4**2 * 256 * 512 + 2**2 * 512 * 512)
        + 4 * (64 + 128 + 256 + 512 + 512) + 2 * (512 * 512 + 2 * 512) + 1024 * 10 + 10
    ),
}


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_forward_and_backward(name):
    model = create_model(name)
    spec = model.spec
    x = torch.randn(4, spec.in_channels, spec.image_size, spec.image_size)
    logits = model(x)
    assert logits.shape == (4, 10) and logits.dtype == torch.float32
    logits.logsumexp(1).sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert torch.isfinite(logits).all()
    model.eval()
    with torch.no_grad():
        assert torch.isfinite(model(x)).all()


@pytest.mark.parametrize("name", sorted(EXPECTED_PARAMETERS))
def test_parameter_counts(name):
    assert count_parameters(create_model(name)) == EXPECTED_PARAMETERS[name]


def test_registry_lists_the_paper_models():
    assert {"lenet5", "cemnet-mnist", "vgg-small", "vgg-large", "cemnet-small", "cemnet-large"} <= set(list_models())
    assert list_models("cemnet-*") == ["cemnet-large", "cemnet-mnist", "cemnet-small"]
    assert model_info("cemnet-small").twin == "vgg-small"
    assert model_info("lenet5").dataset == "mnist"


def test_unknown_model_and_option_errors():
    with pytest.raises(ValueError, match=r"unknown model 'resnet'; expected one of \["):
        create_model("resnet")
    with pytest.raises(ValueError, match=r"does not take \['weight_fixation'\]"):
        create_model("lenet5", weight_fixation=False)


def _layers(model, kind):
    return [m for m in model.modules() if isinstance(m, kind)]


def test_cemnet_mirrors_its_cnn_twin():
    for name in ("cemnet-mnist", "cemnet-small", "cemnet-large"):
        cemnet, cnn_twin = create_model(name), create_model(model_info(name).twin)
        convs = _layers(cnn_twin, torch.nn.Conv2d)
        spectral = _layers(cemnet, cnn.SpectralConv2d)
        assert [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs] == [
            (s.in_channels, s.out_channels, s.kernel_size) for s in spectral
        ]
        assert len(_layers(cemnet, cnn.SpectralMaxPool2d)) == len(_layers(cnn_twin, torch.nn.MaxPool2d))
        assert len(_layers(cemnet, cnn.SpectralBatchNorm2d)) == len(_layers(cnn_twin, torch.nn.BatchNorm2d))


def test_weight_fixation_covers_the_papers_stages():
    mnist = _layers(create_model("cemnet-mnist"), cnn.SpectralConv2d)
    assert [layer.storage for layer in mnist] == ["frequency", "frequency"]
    small = _layers(create_model("cemnet-small"), cnn.SpectralConv2d)
    assert [layer.storage for layer in small] == ["frequency"] * 3 + ["free"] * 2
    assert all(layer.conj == "input" for layer in small)


def test_ablation_overrides():
    model = create_model("cemnet-mnist", weight_fixation=False, batch_norm=False, dropout=False)
    assert {layer.storage for layer in _layers(model, cnn.SpectralConv2d)} == {"free"}
    assert not _layers(model, cnn.SpectralBatchNorm2d) and not _layers(model, torch.nn.BatchNorm1d)
    assert not _layers(model, cnn.SpectralDropout) and not _layers(model, torch.nn.Dropout)
    assert len(_layers(model, cnn.SpectralLeakyReLU)) == 2  # the activation stays
    assert all(layer.bias is not None for layer in _layers(model, cnn.SpectralConv2d))
    cnn_ablated = create_model("lenet5", batch_norm=False, dropout=False)
    assert not _layers(cnn_ablated, torch.nn.BatchNorm2d) and not _layers(cnn_ablated, torch.nn.Dropout)
    with pytest.raises(ValueError, match="contradicts"):
        create_model("cemnet-mnist", weight_fixation=False, storage="spatial")


def test_spatial_storage_stores_kernels():
    model = create_model("cemnet-mnist", storage="spatial")
    assert [tuple(l.weight.shape) for l in _layers(model, cnn.SpectralConv2d)] == [(6, 1, 5, 5), (16, 6, 5, 5)]


@pytest.mark.parametrize("name", ["lenet5", "cemnet-mnist"])
def test_wrong_input_shape_names_expected_and_got(name):
    model = create_model(name)
    with pytest.raises(ValueError, match=r"expects real images of shape \(B, 1, 28, 28\), got shape \(2, 3, 28, 28\)"):
        model(torch.randn(2, 3, 28, 28))
    with pytest.raises(ValueError, match=r"got shape \(28, 28\)"):
        model(torch.randn(28, 28))


@pytest.mark.parametrize("half", [False, True])
def test_torch_compile_traces_a_training_step(half):
    """Dynamo and AOTAutograd (torch.compile's front end, without Inductor's C++ code) give eager's numbers."""
    torch.manual_seed(0)
    eager = create_model("cemnet-mnist", dropout=False, leaky_sigma=0.0, half_spectrum=half).train()  # no noise
    compiled = copy.deepcopy(eager)
    compiled.forward = torch.compile(compiled.forward, backend="aot_eager")
    x, y = torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,))
    logits = []
    for model in (eager, compiled):
        logits.append(model(x))
        F.cross_entropy(logits[-1], y).backward()
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-4, atol=1e-5)
    scale = max(param.grad.abs().max().item() for param in eager.parameters())
    for (key, param), twin in zip(eager.named_parameters(), compiled.parameters()):
        torch.testing.assert_close(twin.grad, param.grad, rtol=1e-3, atol=1e-4 * scale, msg=key)
    noisy = torch.compile(create_model("cemnet-mnist", half_spectrum=half).train().forward, backend="aot_eager")
    assert not torch.equal(noisy(x), noisy(x))  # the noise layers still draw under compile


def test_fcnn_is_its_method_on_the_cnn_plan():
    for name in ("fcnn-mnist", "fcnn-small"):
        fcnn, cnn_twin = create_model(name), create_model(model_info(name).twin)
        convs = _layers(cnn_twin, torch.nn.Conv2d)
        spectral = _layers(fcnn, cnn.SpectralConv2d)
        assert [(c.in_channels, c.out_channels) for c in convs] == [(s.in_channels, s.out_channels) for s in spectral]
        assert all(s.storage == "free" and s.bias is not None for s in spectral)  # learned in frequency, no fixation
        assert len(_layers(fcnn, cnn.SpectralTruncation2d)) == len(_layers(cnn_twin, torch.nn.MaxPool2d))
        # Never back to space: no spectral max pool, no inverse transform, no frequency-domain noise.
        assert not _layers(fcnn, (cnn.SpectralMaxPool2d, cnn.SpectralDropout, cnn.SpectralLeakyReLU))


def test_fcnn_features_are_affine_in_the_input():
    """No nonlinearity before the dense layers: the convolutional part is an affine map (module docstring)."""
    model = create_model("fcnn-mnist").double()
    for layer in _layers(model, cnn.SpectralConv2d):
        torch.nn.init.normal_(layer.bias)
    x, y = torch.randn(2, 1, 28, 28, dtype=torch.float64), torch.randn(2, 1, 28, 28, dtype=torch.float64)
    features = model.features
    torch.testing.assert_close(features(2 * x - y), 2 * features(x) - features(y))


@pytest.mark.parametrize("noise_in_eval", [False, True])
def test_noise_in_eval_keeps_the_leaky_relu_noise_at_evaluation(noise_in_eval):
    model = create_model("cemnet-mnist", noise_in_eval=noise_in_eval).eval()
    x = torch.randn(4, 1, 28, 28)
    with torch.no_grad():
        first, second = model(x), model(x)
    assert torch.equal(first, second) is not noise_in_eval  # the authors' code draws noise at evaluation too
    assert all(layer.active_in_eval is noise_in_eval for layer in _layers(model, cnn.SpectralLeakyReLU))


def _twins(nonlinearity="approximated", spatial_stages=0):
    """A small CNN with circular padding and its exact CEMNet (conj='weight'), noise, dropout and batch norm off."""
    spec = NetSpec(in_channels=2, image_size=8, stages=((3,), (4, 5)), kernel_size=3, hidden=(6,), dropout=0.0,
                   batch_norm=False, negative_slope=0.1)
    cnn_twin = ConvNet(spec).double()
    for module in cnn_twin.modules():
        if isinstance(module, torch.nn.Conv2d):
            module.padding_mode = "circular"
    frequency = CEMNet(spec, conj="weight", storage="spatial", nonlinearity=nonlinearity,
                       spatial_stages=spatial_stages, leaky_sigma=0.0).double()
    spatial_convs = iter(_layers(cnn_twin, torch.nn.Conv2d))
    for module in frequency.features:
        source = next(spatial_convs) if isinstance(module, (torch.nn.Conv2d, cnn.SpectralConv2d)) else None
        if isinstance(module, cnn.SpectralConv2d):
            module.set_spatial_kernel(source.weight.detach())
            module.bias.data.copy_(source.bias.detach())
        elif isinstance(module, torch.nn.Conv2d):
            module.load_state_dict(source.state_dict())
            module.padding_mode = "circular"
    return cnn_twin, frequency


def test_every_layer_nonlinearity_computes_the_cnns_function():
    cnn_twin, frequency = _twins("every-layer")
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    assert_rel_close(frequency.features(x), torch.fft.fft2(cnn_twin.features(x)))
    assert sum(isinstance(m, cnn.SpatialLeakyReLU) for m in frequency.modules()) == 3
    paper_cnn, paper = _twins("approximated")
    assert not torch.allclose(paper.features(x), torch.fft.fft2(paper_cnn.features(x)))  # noise-free, yet linear


@pytest.mark.parametrize("nonlinearity", ["approximated", "split"])
def test_all_spatial_stages_are_the_cnns_features_exactly(nonlinearity):
    cnn_twin, frequency = _twins(nonlinearity, spatial_stages=2)
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    assert not any(isinstance(m, cnn.SpectralConv2d) for m in frequency.modules())
    assert isinstance(frequency.features[-1], cnn.ToFrequency)  # the transform comes last, after the CNN's layers
    assert torch.equal(frequency.features[:-1](x), cnn_twin.features(x))


def test_one_spatial_stage_then_the_frequency_domain():
    cnn_twin, frequency = _twins("every-layer", spatial_stages=1)
    x = torch.randn(3, 2, 8, 8, dtype=torch.float64)
    kinds = [type(m).__name__ for m in frequency.features]
    assert kinds[:4] == ["Conv2d", "LeakyReLU", "MaxPool2d", "ToFrequency"] and "SpectralConv2d" in kinds
    assert_rel_close(frequency.features(x), torch.fft.fft2(cnn_twin.features(x)))


def test_at_pools_and_split_are_true_nonlinearities_where_they_promise():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64)
    pool = cnn.SpectralMaxPool2d(2, 8, negative_slope=0.2)
    assert_rel_close(pool(torch.fft.fft2(x)), torch.fft.fft2(F.leaky_relu(F.max_pool2d(x, 2), 0.2)))
    spectrum = torch.fft.fft2(x)
    split = cnn.SplitLeakyReLU(0.2)(spectrum)
    assert torch.equal(split.real, F.leaky_relu(spectrum.real, 0.2)) and torch.equal(split.imag,
                                                                                      F.leaky_relu(spectrum.imag, 0.2))
    model = create_model("cemnet-small", nonlinearity="at-pools", half_spectrum=True)
    pools = [m for m in model.modules() if isinstance(m, cnn.SpectralMaxPool2d)]
    assert len(pools) == 5 and all(p.negative_slope == 0.2 for p in pools)
    assert sum(isinstance(m, cnn.SpectralLeakyReLU) for m in model.modules()) == 5  # the paper's noise stays


@pytest.mark.parametrize("options,message", [
    ({"nonlinearity": "relu"}, "nonlinearity must be one of ['approximated', 'at-pools', 'every-layer', 'split']"),
    ({"spatial_stages": 6}, "spatial_stages must be a number of stages from 0 to 5"),
    ({"fixed_stages": -1}, "fixed_stages must be a number of stages from 0 to 5"),
    ({"weight_fixation": "sometimes"}, "weight_fixation must be one of [True, False, 'gradient']"),
])
def test_bad_option_values_name_the_allowed_ones(options, message):
    with pytest.raises(ValueError) as raised:
        create_model("cemnet-small", **options)
    assert message in str(raised.value)
