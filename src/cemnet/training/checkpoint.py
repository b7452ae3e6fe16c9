"""Checkpoints: weights in safetensors, the rest loaded with ``torch.load(weights_only=True)``, both checksummed.

A checkpoint named ``NAME`` in a run folder is two files:

* ``NAME.safetensors``: the model weights, plus string metadata (schema
  version, model name and options, epoch, metrics, and the SHA-256 of the
  weights and of the state file). Enough for ``cemnet eval`` and ``cemnet
  convert``; loading it runs no pickle at all.
* ``NAME.TOKEN.state.pt``: optimizer, scheduler, RNG states and the position
  in training, only plain tensors and containers, so it loads with
  ``weights_only=True``. ``TOKEN`` is random per save and recorded in the
  weights header, which is how the two files of one save find each other
  (it is hashed, so a file of an older save cannot be taken for it).

A save writes the new state file, then replaces the weights file atomically
(temporary file, flush, rename), then deletes the old state file. A failed or
interrupted write (full disk, Ctrl-C) therefore leaves the previous
checkpoint whole, and :func:`remove_leftovers` deletes what such a write left.
Every load checks what it reads: the header's fields, the weights against
their checksum, the state's entries; a problem is a :class:`CheckpointError`
that names the file and what is wrong.

Schema versions: 4 adds the checksums (and a training state per rank); files
of schema 3 still load, unchecked.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from cemnet.convert import to_frequency
from cemnet.models import create_model, list_models

SCHEMA_VERSION = 4
OLDEST_READABLE = 3


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unwritable, truncated, corrupt or from an incompatible version."""


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP / ``torch.compile`` wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def weights_digest(weights: dict[str, torch.Tensor]) -> str:
    """SHA-256 of named tensors: names, shapes, dtypes and bytes, in name order."""
    hasher = hashlib.sha256()
    for key in sorted(weights):
        tensor = weights[key].detach().contiguous().cpu()
        hasher.update(f"{key}:{tuple(tensor.shape)}:{tensor.dtype};".encode())
        hasher.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return hasher.hexdigest()


def _file_digest(path: Path) -> str:
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            hasher.update(block)
    return hasher.hexdigest()


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """``write(temporary)``, synced, then renamed onto ``path``: a kill leaves the old file or the new, never half."""
    temporary = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except Exception as error:  # a full disk, a read-only folder, torch's or safetensors' own write errors
        raise CheckpointError(f"cannot write {path} ({_reason(error)}; {_free_space(path.parent)}); the previous "
                              f"checkpoint there is unchanged: free some space or choose another --out") from error
    finally:
        temporary.unlink(missing_ok=True)


def _reason(error: BaseException) -> str:
    """The gist of an I/O error: ``No space left on device``, ``Permission denied``, ..."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    text = str(error).strip().splitlines()
    return (text[-1] if text else type(error).__name__)[:200]


def _free_space(folder: Path) -> str:
    """How much room the disk has left (a short write of torch.save says nothing clearer about a full disk)."""
    try:
        return f"{shutil.disk_usage(folder).free / 2**20:.1f} MiB free there"
    except OSError:
        return "free space unknown"


def save_checkpoint(
    folder: str | Path, name: str, model: nn.Module, meta: dict[str, Any], state: dict[str, Any] | None = None
) -> Path:
    """Write ``NAME.safetensors`` (weights + JSON ``meta``) and, if given, ``NAME.TOKEN.state.pt``.

    Returns the path of the weights file.

    Raises:
        CheckpointError: the files cannot be written (the previous ones stay whole).
    """
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise CheckpointError(f"cannot create the folder {folder} ({_reason(error)})") from None
    token = secrets.token_hex(8)
    weights = {key: value.detach().contiguous() for key, value in unwrap(model).state_dict().items()}
    header = {"format": "cemnet", "version": str(SCHEMA_VERSION), "token": token, "meta": json.dumps(meta),
              "weights_sha256": weights_digest(weights)}
    if state is not None:
        state_path = folder / f"{name}.{token}.state.pt"
        atomic_write(state_path, lambda p: torch.save(state, p))
        header["state_sha256"] = _file_digest(state_path)
    atomic_write(folder / f"{name}.safetensors", lambda p: save_file(weights, str(p), metadata=header))
    for stale in folder.glob(f"{name}.*.state.pt"):
        if stale.name != f"{name}.{token}.state.pt":
            stale.unlink(missing_ok=True)
    return folder / f"{name}.safetensors"


def remove_leftovers(folder: str | Path) -> list[Path]:
    """Delete what interrupted saves left in a run folder: temporary files and unreferenced state files."""
    folder = Path(folder)
    referenced = set()
    for weights in folder.glob("*.safetensors"):
        try:
            referenced.add(f"{weights.stem}.{read_header(weights)['token']}.state.pt")
        except CheckpointError:
            continue
    removed = [path for path in folder.glob(".*.tmp-*")]
    removed += [path for path in folder.glob("*.state.pt") if path.name not in referenced]
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def read_header(path: str | Path) -> dict[str, Any]:
    """The checked metadata of a weights file: ``{"token", "meta", "version", ...}``.

    Raises:
        CheckpointError: no such file, not a cemnet checkpoint, or a header that
            is not what cemnet writes (the message says which field).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({_reason(error)})") from None
    if header.get("format") != "cemnet":
        raise CheckpointError(f"{path} is a safetensors file but not a cemnet checkpoint")
    version = header.get("version", "")
    if not version.isdigit():
        raise CheckpointError(f"{path}: its schema version {version!r} is not a number")
    if not OLDEST_READABLE <= int(version) <= SCHEMA_VERSION:
        raise CheckpointError(f"{path} has schema version {version}; this cemnet reads versions "
                              f"{OLDEST_READABLE} to {SCHEMA_VERSION}")
    try:
        meta = json.loads(header.get("meta", ""))
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: its metadata is not JSON") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is a {type(meta).__name__}, not a JSON object")
    return {**header, "meta": meta, "version": int(version)}


def load_weights(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """Load the weights of ``path`` into ``model`` (strictly, after checking their checksum); returns the header."""
    header = read_header(path)
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({_reason(error)})") from None
    expected = header.get("weights_sha256")
    if expected is not None and weights_digest(weights) != expected:
        raise CheckpointError(f"checkpoint {path} is corrupt: its weights do not match the checksum they were "
                              f"saved with")
    try:
        unwrap(model).load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {path} does not fit the model: {_reason(error)}") from None
    return header


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model a weights file was saved from, rebuilt from its header and loaded; and the header's meta.

    A checkpoint written by ``cemnet convert`` comes back converted.
    """
    meta = read_header(path)["meta"]
    if not isinstance(meta.get("model"), str) or not isinstance(meta.get("model_options", {}), dict):
        raise CheckpointError(f"{path}: its metadata lacks the model's name, or its model options are not an object")
    if meta["model"] not in list_models():
        raise CheckpointError(f"{path} holds a {meta['model']!r}, which this cemnet does not know")
    try:
        model = create_model(meta["model"], **meta.get("model_options", {}))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: its model options do not build a {meta['model']!r} ({error})") from None
    if meta.get("converted"):
        model = to_frequency(model)
    load_weights(path, model)
    return model, meta


def load_state(path: str | Path, entries: dict[str, type] | None = None) -> dict[str, Any]:
    """The training state saved with the weights file ``path``, its checksum checked.

    ``entries`` maps the keys the state must hold to their types (the trainer's
    :data:`cemnet.training.trainer.STATE_ENTRIES`); a state that lacks or
    mistypes one is refused.
    """
    path = Path(path)
    header = read_header(path)
    state_path = path.with_name(f"{path.stem}.{header['token']}.state.pt")
    if not state_path.is_file():
        raise CheckpointError(f"training state {state_path} does not exist; it is needed to resume")
    expected = header.get("state_sha256")
    if expected is not None and _file_digest(state_path) != expected:
        raise CheckpointError(f"training state {state_path} is corrupt: it does not match the checksum it was "
                              f"saved with")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad file, and UnpicklingError for a hostile one
        raise CheckpointError(f"training state {state_path} is corrupt, truncated or not plain data "
                              f"({_reason(error)})") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"training state {state_path} is a {type(state).__name__}, not a dictionary")
    problems = [name for name, kind in (entries or {}).items() if not isinstance(state.get(name), kind)]
    if problems:
        raise CheckpointError(f"training state {state_path} lacks or mistypes {problems}")
    return state
