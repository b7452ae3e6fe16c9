"""Checkpoints: weights in safetensors, the rest loaded with ``torch.load(weights_only=True)``.

A checkpoint named ``NAME`` in a run folder is two files:

* ``NAME.safetensors``: the model weights, plus string metadata (schema
  version, model name and options, epoch, metrics). Enough for ``cemnet eval``
  and ``cemnet convert``; loading it runs no pickle at all.
* ``NAME.TOKEN.state.pt``: optimizer, scheduler, RNG states and the position
  in training, only plain tensors and containers, so it loads with
  ``weights_only=True``. ``TOKEN`` is random per save and recorded in the
  weights header, which is how the two files of one save find each other.

A save writes the new state file, then replaces the weights file atomically
(temporary file, flush, rename), then deletes the old state file. A failed or
interrupted write (full disk, Ctrl-C) therefore leaves the previous
checkpoint whole.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from cemnet.convert import to_frequency
from cemnet.models import create_model

SCHEMA_VERSION = 3


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt or from an incompatible version."""


def _atomic_write(path: Path, write) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{secrets.token_hex(4)}")
    try:
        write(temporary)
        with open(temporary, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def unwrap(model: nn.Module) -> nn.Module:
    """The module inside DDP / ``torch.compile`` wrappers."""
    model = getattr(model, "module", model)
    return getattr(model, "_orig_mod", model)


def save_checkpoint(
    folder: str | Path, name: str, model: nn.Module, meta: dict[str, Any], state: dict[str, Any] | None = None
) -> Path:
    """Write ``NAME.safetensors`` (weights + JSON ``meta``) and, if given, ``NAME.state.pt``.

    Returns the path of the weights file.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(8)
    weights = {key: value.detach().contiguous() for key, value in unwrap(model).state_dict().items()}
    header = {"format": "cemnet", "version": str(SCHEMA_VERSION), "token": token, "meta": json.dumps(meta)}
    if state is not None:
        _atomic_write(folder / f"{name}.{token}.state.pt", lambda p: torch.save(state, p))
    _atomic_write(folder / f"{name}.safetensors", lambda p: save_file(weights, str(p), metadata=header))
    for stale in folder.glob(f"{name}.*.state.pt"):
        if stale.name != f"{name}.{token}.state.pt":
            stale.unlink(missing_ok=True)
    return folder / f"{name}.safetensors"


def read_header(path: str | Path) -> dict[str, Any]:
    """The metadata of a weights file: ``{"token": ..., "meta": {...}}``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({error})") from None
    if header.get("format") != "cemnet":
        raise CheckpointError(f"{path} is a safetensors file but not a cemnet checkpoint")
    if int(header.get("version", -1)) > SCHEMA_VERSION:
        raise CheckpointError(f"{path} has schema version {header['version']}; this cemnet reads up to {SCHEMA_VERSION}")
    return {"token": header.get("token"), "meta": json.loads(header["meta"]), "version": int(header["version"])}


def load_weights(path: str | Path, model: nn.Module) -> dict[str, Any]:
    """Load the weights of ``path`` into ``model`` (strictly); returns the header."""
    header = read_header(path)
    try:
        weights = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {path} is corrupt or truncated ({error})") from None
    try:
        unwrap(model).load_state_dict(weights)
    except RuntimeError as error:
        raise CheckpointError(f"checkpoint {path} does not fit the model: {error}") from None
    return header


def load_model(path: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """The model a weights file was saved from, rebuilt from its header and loaded; and the header's meta.

    A checkpoint written by ``cemnet convert`` comes back converted.
    """
    meta = read_header(path)["meta"]
    model = create_model(meta["model"], **meta["model_options"])
    if meta.get("converted"):
        model = to_frequency(model)
    load_weights(path, model)
    return model, meta


def load_state(path: str | Path) -> dict[str, Any]:
    """The training state saved with the weights file ``path``."""
    path = Path(path)
    header = read_header(path)
    state_path = path.with_name(f"{path.stem}.{header['token']}.state.pt")
    if not state_path.is_file():
        raise CheckpointError(f"training state {state_path} does not exist; it is needed to resume")
    try:
        state = torch.load(state_path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises many types for a bad file
        raise CheckpointError(f"training state {state_path} is corrupt or truncated ({error})") from None
    return state
