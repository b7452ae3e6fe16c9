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
checkpoint whole, and :func:`remove_leftovers` deletes what such a write left,
and only that: files with cemnet's temporary names, and a state file only
when the weights file of its name is intact, names another state file, and
that one exists. While any checkpoint in the folder fails its check, nothing
is deleted: a damaged header must not cost the state file that repairs it.
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
import re
import secrets
import shutil
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from cemnet.convert import to_frequency
from cemnet.models import create_model, list_models, user_file

SCHEMA_VERSION = 4
OLDEST_READABLE = 3
TOKEN = re.compile(r"[0-9a-f]{16}")  # secrets.token_hex(8): the only form a save writes


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
    try:  # the state file the save being replaced wrote: the one file this save makes stale
        previous = state_file(folder / f"{name}.safetensors")
    except CheckpointError:
        previous = None
    weights = {key: value.detach().contiguous() for key, value in unwrap(model).state_dict().items()}
    header = {"format": "cemnet", "version": str(SCHEMA_VERSION), "token": token, "meta": json.dumps(meta),
              "weights_sha256": weights_digest(weights)}
    if state is not None:
        state_path = folder / f"{name}.{token}.state.pt"
        atomic_write(state_path, lambda p: torch.save(state, p))
        header["state_sha256"] = _file_digest(state_path)
    atomic_write(folder / f"{name}.safetensors", lambda p: save_file(weights, str(p), metadata=header))
    if previous is not None and previous.name != f"{name}.{token}.state.pt":
        previous.unlink(missing_ok=True)
    return folder / f"{name}.safetensors"


def remove_leftovers(folder: str | Path, names: tuple[str, ...] = ("last", "best")) -> list[Path]:
    """Delete what interrupted saves of the checkpoints ``names`` left in a run folder, and nothing else.

    Temporary files of :func:`atomic_write` (``.NAME.tmp-XXXXXXXX``) go. A
    state file ``NAME.TOKEN.state.pt`` goes only when ``NAME.safetensors`` is
    intact (header and weights checksum), names another token, and the state
    file it names exists (or it was saved without one): the save that
    replaced it completed. Files of other names (a checkpoint a user renamed
    to keep it, with its state file) are neither checked nor touched.

    Raises:
        CheckpointError: a checkpoint ``names`` fails its check; nothing was deleted.
    """
    folder = Path(folder)
    current: dict[str, str | None] = {}  # checkpoint name -> the state token its intact header names (None: no state)
    for weights in (folder / f"{name}.safetensors" for name in names if (folder / f"{name}.safetensors").exists()):
        header = read_header(weights)
        _check_weights(weights, header, load_file_checked(weights), warn=False)
        named = state_file(weights, header)
        if "state_sha256" in header and not named.is_file():
            raise CheckpointError(f"{weights}: the training state its header names, {named.name}, does not exist; "
                                  f"its header may be damaged (nothing in {folder} was deleted)")
        current[weights.stem] = header["token"] if "state_sha256" in header else None
    removed = [path for path in folder.glob(".*.tmp-*") if re.fullmatch(r"\..+\.tmp-[0-9a-f]{8}", path.name)]
    for path in folder.glob("*.state.pt"):
        name, _, token = path.name.removesuffix(".state.pt").rpartition(".")
        if name in current and TOKEN.fullmatch(token) and token != current[name]:
            removed.append(path)
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
    token = header.get("token", "")
    if not TOKEN.fullmatch(token):
        raise CheckpointError(f"checkpoint {path}: its header is damaged (its state token {token[:40]!r} is not the "
                              f"16 hex digits cemnet writes)")
    try:
        meta = json.loads(header.get("meta", ""))
    except json.JSONDecodeError:
        raise CheckpointError(f"{path}: its metadata is not JSON") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its metadata is a {type(meta).__name__}, not a JSON object")
    return {**header, "meta": meta, "version": int(version)}


def load_file_checked(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, a read error as a :class:`CheckpointError`."""
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({_reason(error)})") from None


def _check_weights(path: Path, header: dict[str, Any], weights: dict[str, torch.Tensor], warn: bool = True) -> None:
    expected = header.get("weights_sha256")
    if expected is None and warn:  # schema 3 wrote no checksum
        print(f"cemnet: warning: {path} has schema version {header['version']}, which stores no checksum: its "
              f"weights are used unchecked", file=sys.stderr)
    elif weights_digest(weights) != expected:
        raise CheckpointError(f"checkpoint {path} is corrupt: its weights do not match the checksum they were "
                              f"saved with")


def check_model_description(path: str | Path, meta: dict[str, Any]) -> None:
    """Refuse a header whose model name or options are missing, mistyped or unknown (``eval`` and ``--resume`` alike)."""
    if not isinstance(meta.get("model"), str) or not isinstance(meta.get("model_options", {}), dict):
        raise CheckpointError(f"{path}: its metadata lacks the model's name, or its model options are not an object")
    if user_file.is_model_file(meta["model"]):
        saved = (meta.get("config") or {}).get("model_sha256")
        try:
            digest = user_file.file_digest(meta["model"])
        except ValueError as error:
            raise CheckpointError(f"{path} holds your model {meta['model']}, and {error}") from None
        if saved is not None and saved != digest:
            raise CheckpointError(f"{path} holds your model {meta['model']}, whose file changed since it was trained "
                                  f"(SHA-256 {saved[:12]}... then, {digest[:12]}... now)")
    elif meta["model"].startswith("python:"):
        raise CheckpointError(f"{path} holds a model built in Python ({meta['model'][7:]}); build it again and load "
                              f"the weights with cemnet.training.checkpoint.load_weights")
    elif meta["model"] not in list_models():
        raise CheckpointError(f"{path} holds a {meta['model']!r}, which this cemnet does not know")


def load_weights(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """Load the weights of ``path`` into ``model`` (strictly, after checking their checksum); returns the header."""
    header = read_header(path)
    weights = load_file_checked(Path(path))
    _check_weights(Path(path), header, weights)
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
    check_model_description(path, meta)
    try:
        model = create_model(meta["model"], **meta.get("model_options", {}))
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{path}: its model options do not build a {meta['model']!r} ({error})") from None
    if meta.get("converted"):
        model = to_frequency(model)
    load_weights(path, model)
    return model, meta


def state_file(path: str | Path, header: dict[str, Any] | None = None) -> Path:
    """The training state file that the header of the weights file ``path`` names (read unless given)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.{(header or read_header(path))['token']}.state.pt")


def load_state(path: str | Path, entries: dict[str, type] | None = None) -> dict[str, Any]:
    """The training state saved with the weights file ``path``, its checksum checked.

    ``entries`` maps the keys the state must hold to their types (the trainer's
    :data:`cemnet.training.trainer.STATE_ENTRIES`); a state that lacks or
    mistypes one is refused.
    """
    header = read_header(path)
    state_path = state_file(path, header)
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
