import copy
import os
import signal
import socket

import pytest
import torch
import torch.multiprocessing as mp

from cemnet import runtime
from cemnet.training import (
    PRESETS,
    TrainConfig,
    TrainingDiverged,
    make_optimizer,
    make_schedule,
    recalibrate_batch_norm,
    train,
)
from cemnet.training import checkpoint as ckpt
from cemnet.training import step as training_step

TINY = {"limit_train": 200, "limit_test": 200, "batch_size": 50, "progress": False, "download": False}


def _config(data_dir, tmp_path, **overrides):
    return TrainConfig(**{"model": "cemnet-mnist", "epochs": 2, "data_dir": str(data_dir),
                          "out": str(tmp_path), **TINY, **overrides})


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path))


def _assert_same_weights(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_schedule_is_cosine_to_the_floor_after_warmup():
    recipe = PRESETS["authors-code"]
    optimizer = make_optimizer(torch.nn.Linear(1, 1), recipe)
    schedule = make_schedule(optimizer, recipe, total_steps=100, warmup_steps=10)
    lrs = []
    for _ in range(100):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[0] == pytest.approx(0.004 / 10) and lrs[9] == pytest.approx(0.004)
    assert lrs[10] == pytest.approx(0.004) and all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert optimizer.param_groups[0]["lr"] == pytest.approx(1e-7)


def test_paper_recipe_defaults():
    config = TrainConfig()
    recipe = config.recipe()
    assert (config.batch_size, recipe.lr, recipe.min_lr, recipe.warmup_epochs, recipe.clip_norm) == (
        100, 0.004, 1e-7, 0.0, None)
    assert TrainConfig(lr=0.01).recipe().lr == 0.01
    with pytest.raises(ValueError, match="preset must be one of"):
        TrainConfig(preset="adam")


@pytest.mark.parametrize("model", ["lenet5", "cemnet-mnist"])
def test_training_learns_and_writes_its_outputs(data_dir, tmp_path, model):
    summary = train(_config(data_dir, tmp_path, model=model, epochs=2, limit_train=1000))
    assert summary["test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    lines = (tmp_path / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,lr,train_loss") and len(lines) == 3
    assert (tmp_path / "best.safetensors").is_file() and (tmp_path / "last.safetensors").is_file()


def test_training_is_deterministic(data_dir, tmp_path):
    first = train(_config(data_dir, tmp_path / "a", epochs=1))
    second = train(_config(data_dir, tmp_path / "b", epochs=1))
    _assert_same_weights(_weights(tmp_path / "a/last.safetensors"), _weights(tmp_path / "b/last.safetensors"))
    assert first["train_loss"] == second["train_loss"]


@pytest.mark.parametrize("model,preset", [("cemnet-mnist", "paper"), ("lenet5", "authors-code")])
def test_interrupted_and_resumed_equals_uninterrupted(data_dir, tmp_path, model, preset):
    # On the CPU, where runs are deterministic: on CUDA, cuDNN's convolution backward is not
    # (an H100 gave lenet5 weights 1e-6 apart between two runs of this test).
    cpu = {"model": model, "preset": preset, "device": "cpu"}
    full = train(_config(data_dir, tmp_path / "full", **cpu))
    train(_config(data_dir, tmp_path / "split", stop_after=1, **cpu))
    resumed = train(_config(data_dir, tmp_path / "split", **cpu), resume=True)
    _assert_same_weights(_weights(tmp_path / "full/last.safetensors"), _weights(tmp_path / "split/last.safetensors"))
    assert resumed["test_accuracy"] == full["test_accuracy"]
    assert len((tmp_path / "split/metrics.csv").read_text().splitlines()) == 3


def test_ctrl_c_mid_epoch_saves_a_checkpoint_that_resumes_exactly(data_dir, tmp_path, monkeypatch):
    train(_config(data_dir, tmp_path / "full"))
    calls = {"n": 0}
    fix = training_step.apply_weight_fixation

    def fix_then_interrupt(model, real_kernel=False):
        calls["n"] += 1
        if calls["n"] == 6:  # step 2 of epoch 2
            os.kill(os.getpid(), signal.SIGINT)
        return fix(model, real_kernel)

    monkeypatch.setattr(training_step, "apply_weight_fixation", fix_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        train(_config(data_dir, tmp_path / "split"))
    monkeypatch.setattr(training_step, "apply_weight_fixation", fix)
    assert ckpt.load_state(tmp_path / "split/last.safetensors")["step"] == 2
    train(_config(data_dir, tmp_path / "split"), resume=True)
    _assert_same_weights(_weights(tmp_path / "full/last.safetensors"), _weights(tmp_path / "split/last.safetensors"))


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(data_dir, tmp_path, monkeypatch):
    train(_config(data_dir, tmp_path, stop_after=1))
    good = (tmp_path / "last.safetensors").read_bytes()
    real_loss = training_step.F.cross_entropy
    monkeypatch.setattr(training_step.F, "cross_entropy",
                        lambda logits, y, **kw: real_loss(logits, y, **kw) * float("nan"))
    with pytest.raises(TrainingDiverged, match=r"loss became nan by epoch 2, step 1.*unchanged"):
        train(_config(data_dir, tmp_path), resume=True)
    assert (tmp_path / "last.safetensors").read_bytes() == good


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank, world_size, port, config, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    summary = train(config)
    torch.save({k: v.detach().clone() for k, v in summary["model"].state_dict().items()}, results / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def test_two_process_ddp_keeps_weights_identical(data_dir, tmp_path):
    config = _config(data_dir, tmp_path / "run", epochs=1, limit_train=400, device="cpu")  # gloo: any machine
    mp.spawn(_ddp_worker, args=(2, _free_port(), config, tmp_path), nprocs=2)
    rank0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    rank1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    _assert_same_weights(rank0, rank1)
    _assert_same_weights(_weights(tmp_path / "run/last.safetensors"), rank0)  # rank 0 wrote its weights


def test_more_cuda_processes_than_devices_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ValueError, match=r"process 1 on this machine has no CUDA device of its own \(1 found\)"):
        train(TrainConfig(out=str(tmp_path), progress=False, download=False))


@pytest.mark.parametrize("name", ["lenet5", "cemnet-mnist"])
def test_recalibration_sets_each_batch_norm_to_its_input_mean(name):
    from cemnet.models import create_model

    torch.manual_seed(0)
    model = create_model(name).train()
    norm_index = 2 if name == "cemnet-mnist" else 1  # the first (spectral) batch norm
    images = torch.randn(1000, 1, 28, 28) + 0.5
    recalibrate_batch_norm(model, images)  # two batches of 500: the cumulative mean is the mean
    assert model.training  # mode restored
    model.eval()
    with torch.no_grad():
        inputs = model.features[:norm_index](images)
    norm = model.features[norm_index]
    if name == "cemnet-mnist":
        pairs = [(norm.real, inputs.real), (norm.imag, inputs.imag)]
    else:
        pairs = [(norm, inputs)]
    for bn, values in pairs:
        expected = values.mean(dim=(0, 2, 3))
        scale = values.abs().mean().item()  # the imaginary means of a real map's spectrum are zero
        torch.testing.assert_close(bn.running_mean, expected, rtol=1e-4, atol=1e-5 * scale)
        assert int(bn.num_batches_tracked) == 2


def test_keras_rmsprop_is_tensorflows_update_with_momentum():
    """Keras (TF 2.5 ApplyRMSProp): s = rho s + (1 - rho) g^2; m = mu m + lr g / sqrt(s + eps); w -= m."""
    from cemnet.training.step import KerasRMSprop

    weight = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    optimizer = KerasRMSprop([weight], lr=0.1, rho=0.9, momentum=0.5, eps=1e-7)
    s = m = torch.zeros(2, dtype=torch.float64)
    w = weight.detach().clone()
    for lr, g in ((0.1, torch.tensor([0.3, 1e-4])), (0.05, torch.tensor([-0.2, 2e-4]))):
        optimizer.param_groups[0]["lr"] = lr
        weight.grad = g.double()
        optimizer.step()
        s = 0.9 * s + 0.1 * g.double() ** 2
        m = 0.5 * m + lr * g.double() / torch.sqrt(s + 1e-7)
        w = w - m
        torch.testing.assert_close(weight.detach(), w, rtol=1e-12, atol=0)
    pytorch = torch.optim.RMSprop([torch.nn.Parameter(torch.tensor([1.0, -2.0]))], lr=0.1, alpha=0.9, momentum=0.5,
                                  eps=1e-7)
    assert type(make_optimizer(torch.nn.Linear(1, 1), PRESETS["authors-code"])) is KerasRMSprop
    assert type(make_optimizer(torch.nn.Linear(1, 1), PRESETS["paper"])) is type(pytorch)


def test_authors_code_clips_each_gradient_tensor():
    from cemnet.training.step import clip_gradients

    model = torch.nn.Linear(3, 2)
    model.weight.grad = torch.full((2, 3), 10.0)  # norm 24.5
    model.bias.grad = torch.full((2,), 1.0)  # norm 1.4: under 15, untouched
    clip_gradients(model, PRESETS["authors-code"])
    assert model.weight.grad.norm().item() == pytest.approx(15.0)
    assert torch.equal(model.bias.grad, torch.ones(2))  # a global clip would have scaled it too


def test_device_schedule_follows_lambdalr_and_resumes_either_kind():
    """The schedule a CUDA graph replays: the same learning rates, step for step, as PyTorch's scheduler."""
    from cemnet.training.step import DeviceSchedule

    recipe = PRESETS["authors-code"]
    eager_opt = make_optimizer(torch.nn.Linear(1, 1), PRESETS["paper"])
    eager = make_schedule(eager_opt, recipe, total_steps=40, warmup_steps=8)
    device_opt = make_optimizer(torch.nn.Linear(1, 1), PRESETS["paper"])
    on_device = DeviceSchedule(device_opt, recipe, total_steps=40, warmup_steps=8, device=torch.device("cpu"))
    for _ in range(45):  # past the end: the floor stays
        assert float(device_opt.param_groups[0]["lr"]) == pytest.approx(eager_opt.param_groups[0]["lr"], rel=1e-6)
        eager.step()
        on_device.step()
    assert device_opt.param_groups[0]["lr"] is on_device.lr  # the tensor a graph reads
    resumed = DeviceSchedule(make_optimizer(torch.nn.Linear(1, 1), PRESETS["paper"]), recipe, 40, 8,
                             torch.device("cpu"))
    resumed.load_state_dict(eager.state_dict())  # an eager run's checkpoint, continued on the device
    assert int(resumed.count) == 45 and float(resumed.lr) == pytest.approx(1e-7)
    twelve = make_schedule(make_optimizer(torch.nn.Linear(1, 1), PRESETS["paper"]), recipe, 40, 8)
    for _ in range(12):
        twelve.step()
    again = make_schedule(make_optimizer(torch.nn.Linear(1, 1), PRESETS["paper"]), recipe, 40, 8)
    on_device.load_state_dict(twelve.state_dict())
    again.load_state_dict(on_device.state_dict())  # and back
    assert again.last_epoch == 12


def test_capturable_steps_train_as_eager_steps_and_resume_exactly(tmp_path):
    """The step a graph records (optimizer state and schedule on the device) on the CPU, without a graph."""
    from cemnet.models import create_model
    from cemnet.training import TrainingStep

    x, y = torch.randn(16, 1, 28, 28), torch.randint(0, 10, (16,))
    weights = {}
    for capturable in (False, True):
        torch.manual_seed(0)
        model = create_model("cemnet-mnist", dropout=False, leaky_sigma=0.0)
        step = TrainingStep(model, PRESETS["paper"], total_steps=20, capturable=capturable)
        for _ in range(6):
            step(x, y)
        weights[capturable] = {k: v.clone() for k, v in model.state_dict().items()}
    for key, value in weights[False].items():
        torch.testing.assert_close(weights[True][key], value, rtol=1e-4, atol=1e-6)  # float32 learning rate
    torch.manual_seed(0)
    model = create_model("cemnet-mnist")
    step = TrainingStep(model, PRESETS["paper"], total_steps=20, capturable=True)
    for _ in range(3):
        step(x, y)
    state = copy.deepcopy({**step.state_dict(), "rng": torch.get_rng_state(), "model": model.state_dict()})
    for _ in range(3):
        step(x, y)
    uninterrupted = {k: v.clone() for k, v in model.state_dict().items()}
    resumed_model = create_model("cemnet-mnist")
    resumed_model.load_state_dict(state["model"])
    resumed = TrainingStep(resumed_model, PRESETS["paper"], total_steps=20, capturable=True)
    resumed.load_state_dict(state)
    torch.set_rng_state(state["rng"])
    for _ in range(3):
        resumed(x, y)
    _assert_same_weights(resumed_model.state_dict(), uninterrupted)


def test_an_epochs_batches_go_to_the_device_in_one_copy():
    from cemnet.data import iterate_batches
    from cemnet.training.trainer import _on_device

    batches = iterate_batches(1050, 100, True, torch.Generator().manual_seed(3))
    moved = _on_device(batches, torch.device("cpu"))
    assert [b.tolist() for b in moved] == [b.tolist() for b in batches] and len(moved[-1]) == 50
    assert all(b.untyped_storage().data_ptr() == moved[0].untyped_storage().data_ptr() for b in moved)
