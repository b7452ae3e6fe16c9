"""CUDA against the CPU: the layers, every preset, training, and CUDA graphs.

Skipped without a CUDA device (CI has none); run on a GPU machine with
``python -m pytest tests/test_cuda.py``. The CPU results are the reference:
the GPU takes other paths (cuFFT, cuBLAS, the batch norm's two-pass
statistics), so the comparisons are to float32 rounding, with TF32 off.
"""

import copy

import pytest
import torch
import torch.nn.functional as F

from cemnet import nn as cnn
from cemnet.bench import training_step
from cemnet.bench.fair_twins import UniformMaskDropout
from cemnet.models import create_model, list_models, model_info
from cemnet.nn import functional as SF
from cemnet.spectral import to_frequency
from cemnet.training import TrainConfig, train
from cemnet.training.checkpoint import load_model
from cemnet.training.graphs import GRAPH_WARMUP, capture_cuda_graph

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

CUDA = torch.device("cuda")


@pytest.fixture(autouse=True)
def _full_float32():
    """cuDNN's convolutions default to TF32 (10-bit mantissas): compare in full float32."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


def assert_close_to_cpu(on_cuda, on_cpu, rel=1e-4, name=None, scale=None):
    """Close relative to ``scale``, default the size of the CPU tensor (float32 sums in another order)."""
    scale = on_cpu.abs().max().item() if scale is None else scale
    torch.testing.assert_close(on_cuda.cpu(), on_cpu, rtol=rel, atol=rel * max(scale, 1e-12),
                               msg=None if name is None else lambda message: f"{name}: {message}")


def noiseless(name):
    """Preset options without random layers, so that both devices compute the same function in training."""
    if "leaky_sigma" not in model_info(name).options:
        return {"dropout": False}
    return {"dropout": False, "leaky_sigma": 0.0}


def on_both_devices(layer, x):
    """``layer`` on ``x``, and copies of both on CUDA, each backpropagating the same random gradient.

    Returns the CUDA layer, the outputs (CPU, CUDA) and the input gradients (CPU, CUDA).
    """
    layer_cuda = copy.deepcopy(layer).to(CUDA)
    x, x_cuda = x.detach().requires_grad_(), x.detach().to(CUDA).requires_grad_()
    out, out_cuda = layer(x), layer_cuda(x_cuda)
    grad = torch.randn_like(out)
    out.backward(grad)
    out_cuda.backward(grad.to(CUDA))
    return layer_cuda, (out.detach(), out_cuda), (x.grad, x_cuda.grad)


def forward_backward(model, x, y):
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return loss.detach()


@pytest.mark.parametrize("half", [False, True])
@pytest.mark.parametrize("conj", ["input", "weight"])
@pytest.mark.parametrize("c_in,c_out,size", [(1, 6, (28, 28)), (5, 7, (8, 6))])  # broadcast and matrix paths
def test_spectral_conv_forward_and_gradients_match_cpu(half, conj, c_in, c_out, size):
    layer = cnn.SpectralConv2d(c_in, c_out, 3, size, conj=conj, storage="frequency", half=half, bias=True)
    layer_cuda, (out, out_cuda), (grad, grad_cuda) = on_both_devices(layer, to_frequency(torch.randn(4, c_in, *size),
                                                                                         half=half))
    assert_close_to_cpu(out_cuda, out)
    assert_close_to_cpu(grad_cuda, grad)
    assert_close_to_cpu(layer_cuda.weight.grad, layer.weight.grad)
    with torch.no_grad():
        layer.fix_weights()
        layer_cuda.fix_weights()
    assert_close_to_cpu(layer_cuda.weight, layer.weight.detach())


def test_spectral_product_gradients_on_cuda_pass_gradcheck():
    layer = cnn.SpectralConv2d(2, 3, 3, (5, 4), storage="frequency", bias=True, dtype=torch.float64, device=CUDA)
    x = to_frequency(torch.randn(2, 2, 5, 4, dtype=torch.float64, device=CUDA)).requires_grad_()
    weight = layer.weight.detach().clone().requires_grad_()

    def conv(x, w):
        return torch.func.functional_call(layer, {"weight": w, "bias": layer.bias}, (x,))

    assert torch.autograd.gradcheck(conv, (x, weight))
    assert torch.autograd.gradgradcheck(conv, (x, weight))


@pytest.mark.parametrize("mean", [0.0, 50.0])  # the CPU takes one pass for the first, two for the second
def test_batch_norm_matches_cpu_with_running_statistics(mean):
    layer = cnn.SpectralBatchNorm2d(5).train()
    with torch.no_grad():
        for part in (layer.real, layer.imag):
            part.weight.uniform_(0.5, 1.5)
            part.bias.uniform_(-1, 1)
    x = torch.randn(8, 5, 6, 4, dtype=torch.complex64) + mean
    layer_cuda, (out, out_cuda), (grad, grad_cuda) = on_both_devices(layer, x)
    assert_close_to_cpu(out_cuda, out)
    assert_close_to_cpu(grad_cuda, grad, rel=1e-3)  # the gradient is a difference of near-equal sums
    for name, value in layer.state_dict().items():
        assert_close_to_cpu(layer_cuda.state_dict()[name].float(), value.float(), name=name)
    for cpu_part, cuda_part in ((layer.real, layer_cuda.real), (layer.imag, layer_cuda.imag)):
        assert_close_to_cpu(cuda_part.weight.grad, cpu_part.weight.grad, rel=1e-3)
        assert_close_to_cpu(cuda_part.bias.grad, cpu_part.bias.grad)


def test_max_pool_and_noise_on_cuda():
    x = to_frequency(torch.randn(3, 4, 8, 8))
    assert_close_to_cpu(SF.spectral_max_pool2d(x.to(CUDA)), SF.spectral_max_pool2d(x))
    ones = torch.full((64, 16, 16, 9), 1 + 1j, dtype=torch.complex64, device=CUDA)  # both parts 1
    parts = torch.view_as_real(SF.multiplicative_noise(ones, 0.25))
    assert abs(parts.mean().item() - 1.0) < 0.005 and abs(parts.std().item() - 0.25) < 0.005  # 0.3M draws
    kept = UniformMaskDropout(0.3).to(CUDA)(torch.ones(1_000_000, device=CUDA))
    assert kept.unique().tolist() == [0.0, pytest.approx(1 / 0.7)]
    assert abs((kept > 0).float().mean().item() - 0.7) < 5 * (0.21 / 1e6) ** 0.5


@pytest.mark.parametrize("name", list_models())
@pytest.mark.parametrize("half", [False, True])
def test_every_preset_matches_cpu_in_training_and_evaluation(name, half):
    options = noiseless(name)
    if "half_spectrum" in model_info(name).options:
        options["half_spectrum"] = half
    elif half:
        pytest.skip("half_spectrum is a CEMNet option")
    model = create_model(name, **options).train()
    model_cuda = copy.deepcopy(model).to(CUDA)
    spec = model.spec
    x = torch.randn(4, spec.in_channels, spec.image_size, spec.image_size)
    y = torch.randint(0, spec.num_classes, (4,))
    loss, loss_cuda = forward_backward(model, x, y), forward_backward(model_cuda, x.to(CUDA), y.to(CUDA))
    assert_close_to_cpu(loss_cuda, loss)
    # Relative to the largest gradient: some are sums that cancel to rounding (the full spectrum of a
    # real image is Hermitian, so the first batch norm's imaginary bias gets about 1e-8).
    scale = max(param.grad.abs().max().item() for param in model.parameters())
    for (key, param), param_cuda in zip(model.named_parameters(), model_cuda.parameters()):
        assert_close_to_cpu(param_cuda.grad, param.grad, rel=2e-3, name=key, scale=scale)
    model.eval()
    model_cuda.eval()
    with torch.no_grad():
        assert_close_to_cpu(model_cuda(x.to(CUDA)), model(x), rel=1e-3)


@pytest.mark.parametrize("name,options", [
    ("cemnet-mnist", {}),
    ("cemnet-mnist", {"half_spectrum": True}),
    ("cemnet-small", {"half_spectrum": True}),
    ("lenet5", {}),
])
def test_graphed_training_steps_equal_eager_steps(name, options):
    """Without random layers a graph replay trains as an eager step does (the same kernels; float32 rounding)."""
    options = {**noiseless(name), **options}
    torch.manual_seed(0)
    eager, _, eager_step = training_step(name, 8, CUDA, options)
    torch.manual_seed(0)
    graphed, _, replay = training_step(name, 8, CUDA, options, cuda_graph=True)  # GRAPH_WARMUP eager steps
    before = {key: value.clone() for key, value in graphed.state_dict().items()}
    for _ in range(GRAPH_WARMUP + 3):
        eager_step()
    for _ in range(3):
        replay()
    torch.cuda.synchronize()
    changed = 0
    for key, value in graphed.state_dict().items():
        assert_close_to_cpu(value.float(), eager.state_dict()[key].float().cpu(), rel=1e-3, name=key)
        changed += not torch.equal(value, before[key])
    assert changed > len(before) // 2  # the replays trained: not just the warm-up's weights


def test_graph_replays_draw_fresh_noise():
    layer = cnn.SpectralDropout(0.5).to(CUDA).train()
    x = torch.full((64, 16, 16, 9), 1 + 1j, dtype=torch.complex64, device=CUDA)  # both parts 1
    out = torch.empty_like(x)
    replay = capture_cuda_graph(lambda: out.copy_(layer(x)), CUDA)
    replay()
    first = out.clone()
    replay()
    assert not torch.equal(first, out)
    parts = torch.view_as_real(out)
    assert abs(parts.mean().item() - 1.0) < 0.005 and abs(parts.std().item() - 0.25) < 0.005  # N(1, p / 2)


def test_trained_on_cuda_evaluates_the_same_on_cpu(data_dir, tmp_path):
    config = TrainConfig(model="cemnet-mnist", epochs=1, data_dir=str(data_dir), out=str(tmp_path), device="cuda",
                         limit_train=500, limit_test=100, batch_size=50, progress=False, download=False)
    summary = train(config)
    model_cuda = summary["model"].eval()
    assert next(model_cuda.parameters()).is_cuda
    model, _ = load_model(tmp_path / "last.safetensors")
    x = torch.randn(16, 1, 28, 28)
    with torch.no_grad():
        assert_close_to_cpu(model_cuda(x.to(CUDA)), model.eval()(x), rel=1e-3)


def _graphed_config(data_dir, out, **overrides):
    return TrainConfig(**{"model": "cemnet-mnist", "epochs": 2, "data_dir": str(data_dir), "out": str(out),
                          "device": "cuda", "limit_train": 1000, "limit_test": 200, "batch_size": 50,
                          "bn_recalibration": 200, "progress": False, "download": False, **overrides})


def test_graphed_training_run_equals_eager_with_noise_off(data_dir, tmp_path):
    """`cemnet train` replays its step as a CUDA graph: without random layers it trains as the eager loop does."""
    noiseless_options = {"model_options": noiseless("cemnet-mnist")}
    eager = train(_graphed_config(data_dir, tmp_path / "eager", cuda_graphs=False, **noiseless_options))
    graphed = train(_graphed_config(data_dir, tmp_path / "graphed", **noiseless_options))
    scale = max(value.abs().max().item() for value in eager["model"].state_dict().values() if value.is_floating_point())
    for key, value in eager["model"].state_dict().items():
        assert_close_to_cpu(graphed["model"].state_dict()[key].float(), value.float().cpu(), rel=1e-3, name=key,
                            scale=scale)
    assert graphed["test_accuracy"] == pytest.approx(eager["test_accuracy"], abs=0.02)


def test_graphed_run_resumes_exactly(data_dir, tmp_path):
    """A graphed run stopped after an epoch and resumed (a new graph, the saved random state) equals one run."""
    train(_graphed_config(data_dir, tmp_path / "full"))
    train(_graphed_config(data_dir, tmp_path / "split", stop_after=1))
    train(_graphed_config(data_dir, tmp_path / "split"), resume=True)
    full, _ = load_model(tmp_path / "full" / "last.safetensors")
    split, _ = load_model(tmp_path / "split" / "last.safetensors")
    for key, value in full.state_dict().items():
        assert torch.equal(split.state_dict()[key], value), key
