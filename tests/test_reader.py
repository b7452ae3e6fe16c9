"""cemnet.models.reader: a user's CNN read whole into a layer plan, its twin built (from_cnn), or the network refused by name."""

import runpy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_rel_close
from torch import nn

import cemnet
from cemnet import nn as cnn
from cemnet.models import create_model, read_plan
from cemnet.ops import count_ops
from cemnet.spectral import to_frequency, to_spatial

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "own_cnn.py"


@pytest.mark.parametrize("cnn_name,twin_name,fixed_stages", [
    ("lenet5", "cemnet-mnist", None), ("vgg-small", "cemnet-small", 3), ("vgg-large", "cemnet-large", 3)])
def test_the_registry_cnns_convert_to_the_registry_cemnets(cnn_name, twin_name, fixed_stages):
    with torch.device("meta"):
        preset = create_model(twin_name)
    source = create_model(cnn_name)
    twin = cemnet.from_cnn(source, fixed_stages=fixed_stages).to("meta")
    assert twin.spec == preset.spec.plan()  # the same layer plan
    assert cemnet.count_parameters(twin) == cemnet.count_parameters(preset)
    assert [type(m) for m in twin.modules()] == [type(m) for m in preset.modules()]
    assert [getattr(m, "storage", None) for m in twin.modules()] == [getattr(m, "storage", None)
                                                                      for m in preset.modules()]
    ours, theirs = count_ops(twin), count_ops(preset)
    assert (ours.forward, ours.backward) == (theirs.forward, theirs.backward)


class OwnCNN(nn.Module):
    """A CNN written here, not a preset: two kernel sizes, BN, LeakyReLU and ReLU, a functional flatten."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.LeakyReLU(0.1), nn.MaxPool2d(2),
            nn.Sequential(nn.Conv2d(16, 32, 5, padding=2, bias=False), nn.BatchNorm2d(32), nn.ReLU()),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(nn.Linear(32 * 8 * 8, 64), nn.ReLU(), nn.Dropout(0.3), nn.Linear(64, 10))

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


def test_an_own_cnn_converts_and_trains_with_falling_loss():
    source = OwnCNN()
    twin = cemnet.from_cnn(source, half_spectrum=True)
    plan = twin.spec
    assert [type(step).__name__ for step in plan.steps] == [
        "Conv", "BatchNorm", "Activation", "Pool", "Conv", "BatchNorm", "Activation", "Pool"]
    assert plan.head.hidden == (64,) and plan.head.dropout == 0.3 and plan.head.negative_slope == 0.0
    convs = [m for m in twin.modules() if isinstance(m, cnn.SpectralConv2d)]
    assert [(c.kernel_size, c.bias is not None) for c in convs] == [(3, True), (5, False)]
    torch.manual_seed(0)
    x, y = torch.randn(32, 3, 32, 32), torch.randint(0, 10, (32,))
    optimizer = torch.optim.RMSprop(twin.parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        optimizer.zero_grad()
        loss = F.cross_entropy(twin(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_a_trained_cnns_kernels_land_in_the_twin_exactly():
    source = OwnCNN().double()
    for conv in (source.features[0], source.features[4][0]):  # "trained": kernels that no initialiser gives
        conv.weight.data.normal_(0, 0.3)
    twin = cemnet.from_cnn(source, conj="weight", storage="spatial", leaky_sigma=0.0)
    convs = [m for m in twin.modules() if isinstance(m, cnn.SpectralConv2d)]
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    for layer, conv, channels in zip(convs, (source.features[0], source.features[4][0]), (3, 16)):
        inputs = x if channels == 3 else torch.randn(2, 16, 16, 16, dtype=torch.float64)
        k = conv.kernel_size[0]
        circular = F.conv2d(F.pad(inputs, (k // 2,) * 4, mode="circular"), conv.weight, conv.bias)
        assert_rel_close(to_spatial(layer(to_frequency(inputs))), circular)
    frequency_storage = cemnet.from_cnn(source, conj="weight")
    for layer, conv in zip([m for m in frequency_storage.modules() if isinstance(m, cnn.SpectralConv2d)],
                           (source.features[0], source.features[4][0])):
        assert_rel_close(layer.spatial_kernel(), conv.weight.detach())


class TutorialNet(nn.Module):
    """The shape of PyTorch's CIFAR-10 tutorial network: functional ReLU and pooling, torch.flatten."""

    def __init__(self, padding=0):
        super().__init__()
        side = 5 if padding == 0 else 8
        self.conv1 = nn.Conv2d(3, 6, 5, padding=padding)
        self.conv2 = nn.Conv2d(6, 16, 5, padding=padding)
        self.fc1 = nn.Linear(16 * side * side, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = torch.flatten(x, 1)
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        return self.fc3(x)


def test_the_tutorial_network_is_refused_for_its_padding_and_converts_with_it():
    with pytest.raises(ValueError, match=r"cannot convert conv1 \(Conv2d\): padding \(0, 0\) is not 'same' \(2, 2\)"):
        cemnet.from_cnn(TutorialNet())
    source = TutorialNet(padding=2).double()
    twin = cemnet.from_cnn(source, conj="weight", storage="spatial", nonlinearity="every-layer").double()
    relus = [m for m in twin.features if isinstance(m, cnn.SpatialLeakyReLU)]
    assert len(relus) == 2 and all(m.negative_slope == 0.0 for m in relus)  # every F.relu of the features
    assert twin.head.negative_slope == 0.0 and twin.head.hidden == (120, 84)  # and of the dense part
    for conv in (source.conv1, source.conv2):
        conv.padding_mode = "circular"
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    features = F.max_pool2d(F.relu(source.conv2(F.max_pool2d(F.relu(source.conv1(x)), 2))), 2)
    assert_rel_close(twin.features(x), torch.fft.fft2(features))


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.block = nn.Conv2d(3, 3, 3, padding=1)
        self.head = nn.Linear(3 * 32 * 32, 10)

    def forward(self, x):
        x = self.conv(x)
        x = x + F.relu(self.block(x))
        return self.head(x.view(x.size(0), -1))


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.attention = nn.MultiheadAttention(4, 1)
        self.head = nn.Linear(4, 10)


def _sequential(*layers, features=3 * 16 * 16):
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(features, 10))


@pytest.mark.parametrize("model,message", [
    (_sequential(nn.Conv2d(3, 3, 3, padding=1, stride=2)), r"0 \(Conv2d\): stride \(2, 2\) is not 1"),
    (_sequential(nn.Conv2d(3, 3, 3, padding=2, dilation=2), nn.MaxPool2d(2)),
     r"0 \(Conv2d\): dilation \(2, 2\) is not 1; padding \(2, 2\) is not 'same'"),
    (_sequential(nn.Conv2d(3, 3, 3, padding=1, groups=3), nn.MaxPool2d(2)), r"0 \(Conv2d\): groups=3"),
    (_sequential(nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"), nn.MaxPool2d(2)),
     r"0 \(Conv2d\): padding_mode 'reflect' is not zero padding"),
    (_sequential(nn.Conv2d(3, 3, 3, padding=1), nn.AvgPool2d(2)), r"1 \(AvgPool2d\): average pooling"),
    (_sequential(nn.Conv2d(3, 3, 3, padding=1), nn.GELU(), nn.MaxPool2d(2)), r"1 \(GELU\): this layer is not"),
    (nn.Sequential(nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.MaxPool2d(2)),
                   nn.Sequential(nn.Conv2d(3, 3, 3, padding=1), nn.Tanh())),
     r"1\.1 \(Tanh\): this layer is not"),
    (Residual(), r"cannot convert Residual.forward's add \(function add\): a residual addition"),
])
def test_what_cannot_be_mapped_is_refused_naming_the_layer(model, message):
    with pytest.raises(ValueError, match=message) as raised:
        cemnet.from_cnn(model)
    assert "Supported: Conv2d" in str(raised.value) and "\n" not in str(raised.value)


def test_attention_and_untraceable_forwards_are_refused():
    attention = Attention()
    attention.forward = lambda x: attention.head(attention.attention(attention.conv(x), x, x)[0])
    with pytest.raises(ValueError, match="cannot"):
        cemnet.from_cnn(attention)

    class Branching(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else x

    with pytest.raises(ValueError, match="cannot read Branching's forward with torch.fx"):
        cemnet.from_cnn(Branching())


def test_a_plan_that_does_not_replay_the_model_is_refused(monkeypatch):
    """The safety net: a chain read wrongly would compute something else; the replay says so."""
    from cemnet.models import reader as module

    real = module._read_module

    def drop_activations(path, layer):
        call = real(path, layer)
        return module._Call(call.path, call.kind, None) if isinstance(layer, nn.ReLU) else call

    monkeypatch.setattr(module, "_read_module", drop_activations)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(4 * 16 * 16, 10))
    with pytest.raises(ValueError, match="does not reproduce its output on the example batch"):
        cemnet.from_cnn(model, torch.randn(2, 3, 32, 32))


def test_the_image_size_comes_from_the_example_or_the_first_linear():
    plan, _ = read_plan(OwnCNN())
    assert plan.image_size == 32 and plan.in_channels == 3 and plan.num_classes == 10
    with pytest.raises(ValueError, match="the first Linear takes 2048 features, but 16x16 images give"):
        cemnet.from_cnn(OwnCNN(), torch.randn(2, 3, 16, 16))


def test_the_example_file_runs():
    runpy.run_path(str(EXAMPLE), run_name="__main__")
