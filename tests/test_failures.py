"""Every failure a user can cause ends in one line, a documented exit code, nothing lost and nothing left behind.

The cases follow docs/user-guide.md, "Failure modes". Runs are tiny (lenet5,
a few hundred images), so that each case costs seconds.
"""

import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors import safe_open
from safetensors.torch import save_file

from cemnet.cli import EXIT_DIVERGED, EXIT_INTERRUPTED, EXIT_USAGE, main
from cemnet.data import DataError, load_dataset
from cemnet.training import TrainConfig, train
from cemnet.training import checkpoint as ckpt
from cemnet.training import step as training_step
from cemnet.training.run_folder import RunFolder, RunFolderError

TINY = ["--model", "lenet5", "--epochs", "2", "--limit-train", "200", "--limit-test", "100", "--batch-size", "50",
        "--bn-recalibration", "100", "--no-progress", "--no-download"]


def cli(*args, data_dir=None, **kwargs):
    """The real entry point in a fresh process: its exit code and its stderr."""
    extra = ["--data-dir", str(data_dir)] if data_dir is not None else []
    done = subprocess.run([sys.executable, "-m", "cemnet", *args, *extra], capture_output=True, text=True,
                          timeout=300, **kwargs)
    return done.returncode, done.stderr


def one_line(stderr: str) -> str:
    """The error line; fails on a traceback or on more than one line."""
    lines = [line for line in stderr.splitlines() if line.strip() and "warning" not in line.lower()]
    assert "Traceback" not in stderr and len(lines) == 1, stderr
    return lines[0]


def tiny(data_dir, out, *extra):
    return main(["train", *TINY, "--data-dir", str(data_dir), "--out", str(out), *extra])


# ---------------------------------------------------------------------------- options


@pytest.mark.parametrize("args,message", [
    (["train", "--lr", "0"], "argument --lr: expected a finite number greater than 0, got '0'"),
    (["train", "--limit-train", "0"], "argument --limit-train: expected a whole number of at least 1"),
    (["train", "--limit-train", "-5"], "argument --limit-train: expected a whole number of at least 1"),
    (["train", "--bn-recalibration", "-1"], "argument --bn-recalibration: expected a whole number of at least 0"),
    (["train", "--warmup-epochs", "-1"], "argument --warmup-epochs: expected a finite number of at least 0"),
    (["train", "--warmup-epochs", "nan"], "argument --warmup-epochs: expected a finite number of at least 0"),
    (["train", "--seed", "123456789012345678901"], "argument --seed: expected a seed from 0 to 4294967295"),
    (["train", "--device", "foo"], "argument --device: device must be auto, cpu, cuda or cuda:N, got 'foo'"),
    (["eval", "--checkpoint", "x.safetensors", "--batch-size", "0"], "argument --batch-size"),
    (["train", "--model", "resnet"], "unknown model 'resnet'"),
])
def test_bad_options_are_one_line_and_exit_2(capsys, args, message):
    try:
        code = main(args)  # parsed, then refused when the run starts
    except SystemExit as refused:  # refused by the parser
        code = refused.code
    err = capsys.readouterr().err
    assert code == EXIT_USAGE and message in one_line(err)


def test_a_model_for_other_images_is_refused_before_any_data_is_read(tmp_path, capsys):
    assert main(["train", "--model", "cemnet-mnist", "--dataset", "cifar10", "--data-dir", str(tmp_path / "none"),
                 "--out", str(tmp_path / "run")]) == EXIT_USAGE
    line = one_line(capsys.readouterr().err)
    assert "cemnet-mnist is built for mnist images (1, 28, 28); cifar10 images are (3, 32, 32)" in line
    assert not (tmp_path / "none").exists() and not (tmp_path / "run").exists()  # nothing read, nothing created


def test_convert_refuses_to_overwrite_and_to_write_without_the_suffix(data_dir, tmp_path, capsys):
    assert tiny(data_dir, tmp_path / "run", "--epochs", "1") == 0
    last = tmp_path / "run" / "last.safetensors"
    before = sorted(path.name for path in (tmp_path / "run").iterdir())
    for out, message in ((last, "exists"), (tmp_path / "freq", "must name a .safetensors file")):
        capsys.readouterr()
        assert main(["convert", "--checkpoint", str(last), "--model", "lenet5", "--out", str(out)]) == EXIT_USAGE
        assert message in one_line(capsys.readouterr().err)
    assert sorted(path.name for path in (tmp_path / "run").iterdir()) == before
    ckpt.load_state(last)  # the run can still resume


# ---------------------------------------------------------------------------- run folders


def test_an_existing_run_is_kept_unless_resumed_or_overwritten(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert tiny(data_dir, run, "--epochs", "1") == 0
    before = (run / "metrics.csv").read_text(), (run / "best.safetensors").read_bytes()
    capsys.readouterr()
    assert tiny(data_dir, run, "--epochs", "1") == EXIT_USAGE
    assert "already holds a run; continue it with --resume, replace it with --overwrite" in one_line(
        capsys.readouterr().err)
    assert ((run / "metrics.csv").read_text(), (run / "best.safetensors").read_bytes()) == before
    assert tiny(data_dir, run, "--epochs", "1", "--seed", "3", "--overwrite") == 0
    assert (run / "best.safetensors").read_bytes() != before[1] and len((run / "metrics.csv").read_text().split()) == 2


def test_a_run_folder_in_use_is_refused(data_dir, tmp_path, capsys):
    holder = RunFolder(tmp_path / "run")  # as a training process holds it
    try:
        assert tiny(data_dir, tmp_path / "run") == EXIT_USAGE
        assert "is in use by another cemnet process" in one_line(capsys.readouterr().err)
        with pytest.raises(RunFolderError, match="in use"):
            RunFolder(tmp_path / "run", resume=True)
    finally:
        holder.close()
    RunFolder(tmp_path / "run").close()  # released: the next owner gets it


def test_a_run_folder_that_is_a_file_or_unwritable_is_refused_at_once(data_dir, tmp_path, capsys, monkeypatch):
    (tmp_path / "file").write_text("x")
    assert tiny(data_dir, tmp_path / "file") == EXIT_USAGE
    assert "is a file, not a folder" in one_line(capsys.readouterr().err)

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr("tempfile.TemporaryFile", read_only)
    assert tiny(data_dir, tmp_path / "readonly") == EXIT_USAGE
    assert "cannot write to the run folder" in one_line(capsys.readouterr().err)


def test_resume_refuses_changed_settings_and_takes_the_runs_own(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert tiny(data_dir, run, "--stop-after", "1") == 0
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--lr", "0.1", "--batch-size", "25",
                 "--data-dir", str(data_dir)]) == EXIT_USAGE
    line = one_line(capsys.readouterr().err)
    assert "batch_size=50 (asked: 25)" in line and "lr=not set (asked: 0.1)" in line
    assert main(["train", "--out", str(run), "--resume", "--data-dir", str(data_dir), "--no-progress"]) == 0
    rows = (run / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == ["epoch", "1", "2"]  # the run's 2 epochs, not the default 5


def test_metrics_rows_and_checkpoints_cannot_be_split_by_a_kill(data_dir, tmp_path, monkeypatch):
    full = train(TrainConfig(**_tiny_config(data_dir, tmp_path / "full")))
    save = ckpt.save_checkpoint

    def killed_after_the_row(folder, name, *args, **kwargs):
        if name == "best" and "metrics.csv" in os.listdir(folder) and (Path(folder) / "metrics.csv").read_text(
                ).count("\n") == 3:  # epoch 2's row is written; its checkpoints are not
            raise KeyboardInterrupt
        return save(folder, name, *args, **kwargs)

    monkeypatch.setattr(ckpt, "save_checkpoint", killed_after_the_row)
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**_tiny_config(data_dir, tmp_path / "split")))
    monkeypatch.setattr(ckpt, "save_checkpoint", save)
    resumed = train(TrainConfig(**_tiny_config(data_dir, tmp_path / "split")), resume=True)
    rows = (tmp_path / "split" / "metrics.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows] == ["epoch", "1", "2"]  # epoch 2 once: dropped, retrained, written
    assert resumed["test_accuracy"] == full["test_accuracy"]


def test_leftovers_of_killed_saves_are_removed(data_dir, tmp_path):
    run = tmp_path / "run"
    train(TrainConfig(**_tiny_config(data_dir, run, stop_after=1)))
    (run / ".last.safetensors.tmp-0badc0de").write_bytes(b"x" * 1000)
    (run / "last.0123456789abcdef.state.pt").write_bytes(b"x")
    train(TrainConfig(**_tiny_config(data_dir, run)), resume=True)
    assert not list(run.glob(".*tmp*")) and len(list(run.glob("*.state.pt"))) == 2  # last's and best's


def _tiny_config(data_dir, out, **overrides):
    return {"model": "lenet5", "epochs": 2, "limit_train": 200, "limit_test": 100, "batch_size": 50,
            "bn_recalibration": 100, "progress": False, "download": False, "data_dir": str(data_dir), "out": str(out),
            **overrides}


# ---------------------------------------------------------------------------- saving and loading


def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(data_dir, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert tiny(data_dir, run, "--stop-after", "1") == 0
    before = (run / "last.safetensors").read_bytes()

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", disk_full)
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--data-dir", str(data_dir)]) == EXIT_USAGE
    assert "MiB free there); the previous checkpoint there is unchanged" in one_line(
        capsys.readouterr().err)
    assert (run / "last.safetensors").read_bytes() == before and not list(run.glob(".*tmp*"))


def test_ctrl_c_on_a_full_disk_still_exits_130_with_one_line(data_dir, tmp_path, capsys, monkeypatch):
    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    def interrupt_then_disk_full(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        monkeypatch.setattr(ckpt, "save_file", disk_full)
        return real_fix(*args, **kwargs)

    real_fix = training_step.apply_weight_fixation
    monkeypatch.setattr(training_step, "apply_weight_fixation", interrupt_then_disk_full)
    assert tiny(data_dir, tmp_path / "run") == EXIT_INTERRUPTED
    assert "No space left" in one_line(capsys.readouterr().err)


def _flip(path: Path, offset_from_end: int) -> None:
    content = bytearray(path.read_bytes())
    content[-offset_from_end] ^= 0x40
    path.write_bytes(bytes(content))


def test_a_flipped_bit_in_the_weights_is_found(data_dir, tmp_path, capsys):
    assert tiny(data_dir, tmp_path, "--epochs", "1") == 0
    _flip(tmp_path / "best.safetensors", 3)  # the top byte of the last float
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "best.safetensors"), "--data-dir", str(data_dir)]) == EXIT_USAGE
    assert "is corrupt: its weights do not match the checksum they were saved with" in one_line(
        capsys.readouterr().err)


def _rewrite_header(path: Path, **changes) -> None:
    with safe_open(str(path), framework="pt") as handle:
        header = dict(handle.metadata())
        weights = {key: handle.get_tensor(key) for key in handle.keys()}
    save_file(weights, str(path), metadata={**header, **changes})


@pytest.mark.parametrize("changes,message", [
    ({"meta": json.dumps([1, 2])}, "its metadata is a list, not a JSON object"),
    ({"meta": json.dumps({"epoch": 1})}, "lacks the model's name"),
    ({"meta": json.dumps({"model": "lenet5", "model_options": [1]})}, "lacks the model's name, or its model options"),
    ({"meta": json.dumps({"model": "lenet5", "model_options": {"wings": 2}})}, "do not build a 'lenet5'"),
    ({"meta": "{not json"}, "its metadata is not JSON"),
    ({"version": "abc"}, "its schema version 'abc' is not a number"),
    ({"version": "9"}, "has schema version 9; this cemnet reads versions 3 to 4"),
    ({"format": "other"}, "is a safetensors file but not a cemnet checkpoint"),
])
def test_hostile_checkpoint_headers_are_one_line(data_dir, tmp_path, capsys, changes, message):
    assert tiny(data_dir, tmp_path, "--epochs", "1") == 0
    _rewrite_header(tmp_path / "best.safetensors", **changes)
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(tmp_path / "best.safetensors"), "--data-dir", str(data_dir)]) == EXIT_USAGE
    assert message in one_line(capsys.readouterr().err)


class _Planted:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["CEMNET_PLANTED"]),))


@pytest.mark.parametrize("state,message", [
    ("pickle", "corrupt, truncated or not plain data"),
    ({"epoch": -5}, "lacks or mistypes"),
    ("negative", "outside this run's 2 epochs"),
    ({"rng": [{"cpu": torch.zeros(3, dtype=torch.uint8)}]}, "is malformed: its random state 0 is not a generator state"),
    ({"schedule": {"last_epoch": 4, "base_lrs": [0.004]}}, "is malformed: its schedule lacks"),
    ({"optimizer": {"state": {}, "param_groups": []}}, "is malformed: its optimizer state has no parameter groups"),
    ({"optimizer": {"state": {}, "param_groups": [{"params": [0, 1]}]}}, "does not fit this run's optimizer"),
])
def test_hostile_training_states_never_run_and_are_one_line(data_dir, tmp_path, capsys, monkeypatch, state, message):
    run = tmp_path / "run"
    assert tiny(data_dir, run, "--stop-after", "1") == 0
    last = run / "last.safetensors"
    state_path = run / f"last.{ckpt.read_header(last)['token']}.state.pt"
    planted = tmp_path / "planted"
    monkeypatch.setenv("CEMNET_PLANTED", str(planted))
    if state == "pickle":
        state_path.write_bytes(pickle.dumps({"epoch": _Planted()}))
    else:
        good = torch.load(state_path, weights_only=True)
        if state == "negative":
            state = {"epoch": -5, "step": good["step"]}
        mixed = set(state) & {"rng", "schedule", "optimizer", "step"}  # a good state with one entry broken
        torch.save({**good, **state} if mixed else state, state_path)
    _rewrite_header(last, state_sha256=ckpt._file_digest(state_path))  # checksums match: the content is refused
    before = _folder_bytes(run)
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--data-dir", str(data_dir)]) == EXIT_USAGE
    line = one_line(capsys.readouterr().err)
    assert message in line and (state == "pickle" or str(state_path) in line or "last.safetensors" in line)
    assert not planted.exists()  # the pickle's code never ran
    assert _folder_bytes(run) == before  # nothing changed on disk


def _folder_bytes(folder: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in folder.iterdir() if path.is_file()}


@pytest.mark.parametrize("token,message", [
    ("deadbeef00000000", "the training state its header names, last.deadbeef00000000.state.pt, does not exist; its "
                         "header may be damaged"),
    ("../../x", "its header is damaged (its state token '../../x' is not the 16 hex digits cemnet writes)"),
])
def test_a_damaged_header_deletes_nothing_and_a_repaired_one_resumes(data_dir, tmp_path, capsys, token, message):
    run = tmp_path / "run"
    assert tiny(data_dir, run, "--stop-after", "1") == 0
    last = run / "last.safetensors"
    real = ckpt.read_header(last)["token"]
    _rewrite_header(last, token=token)
    before = _folder_bytes(run)
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--data-dir", str(data_dir), "--no-progress"]) == EXIT_USAGE
    line = one_line(capsys.readouterr().err)
    assert message in line and str(last) in line
    assert _folder_bytes(run) == before  # the real state file is still there
    if token == "../../x":  # eval reads the damaged header the same way
        assert main(["eval", "--checkpoint", str(last), "--data-dir", str(data_dir)]) == EXIT_USAGE
        assert message in one_line(capsys.readouterr().err)
    _rewrite_header(last, token=real)  # the repair
    assert main(["train", "--out", str(run), "--resume", "--data-dir", str(data_dir), "--no-progress"]) == 0


def test_an_unreadable_header_or_a_renamed_checkpoint_costs_no_state_file(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert tiny(data_dir, run, "--stop-after", "1") == 0
    (run / "best.safetensors").rename(run / "keep.safetensors")  # a user keeps a checkpoint under another name
    states = sorted(path.name for path in run.glob("*.state.pt"))
    assert main(["train", "--out", str(run), "--resume", "--data-dir", str(data_dir), "--no-progress"]) == 0
    assert {path.name for path in run.glob("best.*.state.pt")} >= {n for n in states if n.startswith("best.")}
    content = (run / "last.safetensors").read_bytes()
    (run / "last.safetensors").write_bytes(content[:20])  # a header that cannot be read at all
    before = _folder_bytes(run)
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--data-dir", str(data_dir)]) == EXIT_USAGE
    assert "is corrupt or truncated" in one_line(capsys.readouterr().err)
    assert _folder_bytes(run) == before


def test_resume_reads_a_damaged_model_description_as_eval_does(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert tiny(data_dir, run, "--stop-after", "1") == 0
    _rewrite_header(run / "last.safetensors", meta=json.dumps({"epoch": 1}))
    capsys.readouterr()
    assert main(["train", "--out", str(run), "--resume", "--data-dir", str(data_dir)]) == EXIT_USAGE
    assert "lacks the model's name" in one_line(capsys.readouterr().err)


def test_resume_with_another_dataset_names_the_changed_setting(data_dir, tmp_path, capsys):
    run = tmp_path / "run"
    assert tiny(data_dir, run, "--stop-after", "1") == 0
    capsys.readouterr()
    empty = tmp_path / "no-data"  # no Fashion-MNIST anywhere: the settings check must come first
    empty.mkdir()
    assert main(["train", "--out", str(run), "--resume", "--dataset", "fashion-mnist", "--data-dir", str(empty),
                 "--no-download"]) == EXIT_USAGE
    assert "dataset='mnist' (asked: 'fashion-mnist')" in one_line(capsys.readouterr().err)


def test_a_checkpoint_of_the_older_schema_loads_with_one_warning(data_dir, tmp_path, capsys):
    assert tiny(data_dir, tmp_path, "--epochs", "1") == 0
    best = tmp_path / "best.safetensors"
    with safe_open(str(best), framework="pt") as handle:
        header = {k: v for k, v in handle.metadata().items() if not k.endswith("_sha256")}
        weights = {key: handle.get_tensor(key) for key in handle.keys()}
    save_file(weights, str(best), metadata={**header, "version": "3"})
    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(best), "--data-dir", str(data_dir)]) == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "warning" in line]
    assert len(warnings) == 1 and "schema version 3, which stores no checksum" in warnings[0]


# ---------------------------------------------------------------------------- data


def _idx(dims, data: bytes) -> bytes:
    return b"\x00\x00\x08" + bytes([len(dims)]) + b"".join(d.to_bytes(4, "big") for d in dims) + data


def test_a_flipped_byte_in_a_gzip_file_is_named(data_dir, tmp_path):
    folder = tmp_path / "mnist"
    shutil.copytree(data_dir / "mnist", folder)
    _flip(folder / "t10k-images-idx3-ubyte.gz", 5000)
    with pytest.raises(DataError) as raised:
        load_dataset("mnist", "test", tmp_path)
    assert "cannot decompress it" in str(raised.value) and "t10k-images-idx3-ubyte.gz" in str(raised.value)


@pytest.mark.parametrize("images,labels,message", [
    (b"\x00\x00\x08\x03\x00\x00", _idx([2], bytes(2)), "the IDX header of 3 dimensions is truncated"),
    (_idx([2 * 784], bytes(2 * 784)), _idx([2], bytes(2)), "images of shape (), not (28, 28)"),
    (_idx([2, 28, 28], bytes(2 * 784)), _idx([2], bytes([3, 12])), "labels outside 0..9"),
    (_idx([2, 28, 28], bytes(2 * 784)), _idx([3], bytes(3)), "3 labels for 2 images"),
])
def test_broken_uncompressed_files_are_named_in_one_line(tmp_path, images, labels, message):
    """Fashion-MNIST publishes no digest of the uncompressed files: their structure is all that can be checked."""
    folder = tmp_path / "fashion-mnist"
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte").write_bytes(images)
    (folder / "t10k-labels-idx1-ubyte").write_bytes(labels)
    with pytest.raises(DataError) as raised:
        load_dataset("fashion-mnist", "test", tmp_path)
    text = str(raised.value)
    assert message in text and "\n" not in text and str(folder) in text


def test_a_failed_run_creates_no_folders_and_says_whether_it_downloaded(tmp_path):
    code, err = cli("train", "--data-dir", str(tmp_path / "nowhere"), "--no-download", "--epochs", "1", "--out",
                    str(tmp_path / "run"))
    assert code == EXIT_USAGE and "(no download was tried)" in one_line(err)
    env = {**os.environ, "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}  # no network
    code, err = cli("train", "--data-dir", str(tmp_path / "nowhere"), "--epochs", "1", "--out", str(tmp_path / "run"),
                    env=env)
    assert code == EXIT_USAGE and "(the download failed:" in one_line(err)
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "run").exists()


def test_a_run_folder_is_removed_only_when_this_process_created_it_and_wrote_nothing(tmp_path):
    created = RunFolder(tmp_path / "new" / "run")
    created.close()
    assert not (tmp_path / "new").exists()
    (tmp_path / "mine").mkdir()
    RunFolder(tmp_path / "mine").close()  # a folder the user made is theirs, empty or not
    assert (tmp_path / "mine").is_dir()
    written = RunFolder(tmp_path / "written")
    written.write_row({"epoch": 1})
    written.close()
    assert (tmp_path / "written" / "metrics.csv").is_file()


# ---------------------------------------------------------------------------- divergence


def test_finite_divergence_is_reported_and_exits_3(data_dir, tmp_path, capsys, monkeypatch):
    real_loss = training_step.F.cross_entropy
    monkeypatch.setattr(training_step.F, "cross_entropy", lambda logits, y, **kw: real_loss(logits, y, **kw) * 1e6)
    assert tiny(data_dir, tmp_path / "run", "--epochs", "1") == EXIT_DIVERGED
    assert "training diverged; no checkpoint had been saved yet" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "run" / "last.safetensors").exists()


# ---------------------------------------------------------------------------- processes


def test_workers_end_with_their_launcher(tmp_path):
    """A ``torchrun`` worker asks for SIGTERM when its parent dies (no orphans training on)."""
    marker = tmp_path / "alive"
    (tmp_path / "worker.py").write_text(
        "import pathlib, signal, sys, time\n"
        "from cemnet.training.distributed import _end_with_the_launcher\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))\n"
        "_end_with_the_launcher()\n"
        f"pathlib.Path({str(marker)!r}).write_text('ready')\n"
        "time.sleep(60)\n"
        f"pathlib.Path({str(marker)!r}).write_text('orphan')\n")
    (tmp_path / "launcher.py").write_text(
        "import subprocess, sys, time\n"
        f"worker = subprocess.Popen([sys.executable, {str(tmp_path / 'worker.py')!r}])\n"
        "print(worker.pid, flush=True)\n"
        "time.sleep(60)\n")
    launcher = subprocess.Popen([sys.executable, str(tmp_path / "launcher.py")], stdout=subprocess.PIPE, text=True)
    worker = int(launcher.stdout.readline())
    for _ in range(600):
        if marker.exists():
            break
        time.sleep(0.05)
    launcher.kill()  # SIGKILL: no chance to clean up after itself
    launcher.wait()
    for _ in range(100):
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the worker outlived its launcher")
    assert marker.read_text() == "ready"


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _ddp_worker(rank, world_size, port, config, interrupt_rank, results):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world_size),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    if rank == interrupt_rank:
        real_fix, calls = training_step.apply_weight_fixation, [0]

        def fix_then_interrupt(model, real_kernel=False):
            calls[0] += 1
            if calls[0] == 5:  # step 5 of 8 (400 images, batch 50 on 2 ranks)
                os.kill(os.getpid(), signal.SIGINT)  # this rank only
            return real_fix(model, real_kernel)

        training_step.apply_weight_fixation = fix_then_interrupt
    outcome = "finished"
    try:
        train(config, resume=(Path(config.out) / "last.safetensors").exists())
    except KeyboardInterrupt:
        outcome = "interrupted"
    (results / f"rank{rank}.txt").write_text(outcome)
    torch.distributed.destroy_process_group()


def test_ddp_ctrl_c_on_one_rank_stops_every_rank_and_resumes_exactly(data_dir, tmp_path):
    config = TrainConfig(**_tiny_config(data_dir, tmp_path / "split", limit_train=400, device="cpu"))
    full = TrainConfig(**_tiny_config(data_dir, tmp_path / "full", limit_train=400, device="cpu"))
    mp.spawn(_ddp_worker, args=(2, _free_port(), full, -1, tmp_path), nprocs=2)
    mp.spawn(_ddp_worker, args=(2, _free_port(), config, 1, tmp_path), nprocs=2)  # no hang: both ranks stop
    assert [(tmp_path / f"rank{rank}.txt").read_text() for rank in (0, 1)] == ["interrupted"] * 2
    state = ckpt.load_state(tmp_path / "split" / "last.safetensors")
    assert state["epoch"] == 0 and state["step"] == 5 and len(state["partial"]) == 2  # each rank's own sums
    mp.spawn(_ddp_worker, args=(2, _free_port(), config, -1, tmp_path), nprocs=2)
    _assert_same_metrics_but_times(tmp_path / "full", tmp_path / "split")
    full_weights = ckpt.load_model(tmp_path / "full" / "last.safetensors")[0].state_dict()
    split_weights = ckpt.load_model(tmp_path / "split" / "last.safetensors")[0].state_dict()
    assert all(torch.equal(full_weights[key], split_weights[key]) for key in full_weights)


def _assert_same_metrics_but_times(*runs: Path) -> None:
    """The runs' metrics.csv agree in every column but the times."""
    import csv

    rows = []
    for run in runs:
        with (run / "metrics.csv").open() as handle:
            rows.append([{k: v for k, v in row.items() if k not in ("epoch_seconds", "images_per_second")}
                         for row in csv.DictReader(handle)])
    assert rows[0] == rows[1] and len(rows[0]) == 2


def test_a_broken_labels_file_downloads_that_file_and_names_it(data_dir, tmp_path, monkeypatch):
    import urllib.request

    folder = tmp_path / "mnist"
    shutil.copytree(Path(data_dir) / "mnist", folder)
    labels = next(folder.glob("train-labels*"))
    _flip(labels, 10)
    asked = []

    def offline(url, timeout):
        asked.append(url)
        raise OSError("no network here")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(DataError) as raised:
        load_dataset("mnist", "train", tmp_path, download=True)
    assert asked and all("train-labels-idx1-ubyte" in url for url in asked)  # only the broken file is fetched
    assert "the download failed" in str(raised.value) and "train-labels-idx1-ubyte" in str(raised.value).split(
        "the download failed")[1]
