"""Training checkpoints: everything needed to continue a run exactly, with no pickle.

A checkpoint is a folder ``checkpoints/step-00000100/`` holding ``model.safetensors`` (the
weights), ``optimizer.safetensors`` (the optimizer's tensors), ``state.json`` (step, data
position, learning-rate schedule, optimizer scalars, Python and NumPy RNG states) and
``torch_rng.safetensors``, plus ``checksums.json`` with the sha256 of each file. When part of
the model is frozen (LoRA), ``model.safetensors`` holds only the trainable tensors: the frozen
ones come back from where they came from (``model.init_from``). It is written into a temporary
folder and renamed into place. Loading checks every checksum: a damaged
latest checkpoint is skipped, with a warning, for the one before it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sigerlm.io import atomic_directory

log = logging.getLogger("sigerlm.train")
PREFIX = "step-"


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], np_state[1].tolist(), int(np_state[2]), int(np_state[3]), float(np_state[4])],
    }
    return state, {"torch": torch.get_rng_state()}


def _set_rng_state(state: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["torch"])


def trainable_names(model: nn.Module) -> set[str]:
    return {name for name, p in model.named_parameters() if p.requires_grad}


def model_tensors(model: nn.Module) -> tuple[dict[str, torch.Tensor], bool]:
    """The tensors a checkpoint keeps, and whether they are only the trainable part."""
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    trainable = trainable_names(model)
    frozen = any(not p.requires_grad for p in model.parameters())
    if frozen:
        state = {k: v for k, v in state.items() if k in trainable}
    return state, frozen


def save(
    folder: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, extra: dict[str, Any], keep: int
) -> Path:
    """Write checkpoint ``step`` under ``folder`` and keep only the newest ``keep``."""
    from safetensors.torch import save_file

    path = folder / f"{PREFIX}{step:08d}"
    opt = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, Any] = {}
    for index, values in opt["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{key}"] = value.detach().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    rng, rng_tensors = _rng_state()
    weights, partial = model_tensors(model)
    state = {
        "step": step,
        "extra": extra,
        "rng": rng,
        "partial": partial,
        "optimizer": {"param_groups": opt["param_groups"], "scalars": scalars},
    }
    with atomic_directory(path) as tmp:
        save_file(weights, str(tmp / "model.safetensors"))
        save_file(tensors or {"_empty": torch.zeros(0)}, str(tmp / "optimizer.safetensors"))
        save_file(rng_tensors, str(tmp / "torch_rng.safetensors"))
        (tmp / "state.json").write_text(json.dumps(state))
        sums = {p.name: _sha256(p) for p in sorted(tmp.iterdir())}
        (tmp / "checksums.json").write_text(json.dumps(sums, indent=2))
    for old in sorted(folder.glob(f"{PREFIX}*"))[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return path


def _verify(path: Path) -> None:
    sums = json.loads((path / "checksums.json").read_text())
    if not isinstance(sums, dict):
        raise ValueError("checksums.json is not an object")
    for name, digest in sums.items():
        if _sha256(path / name) != digest:
            raise ValueError(f"{name} does not match its checksum")


def exists(folder: Path) -> bool:
    """Whether ``folder`` holds any checkpoint, whole or not."""
    return any(folder.glob(f"{PREFIX}*"))


def clean_orphans(folder: Path) -> list[Path]:
    """Remove the temporary folders a killed process left while writing a checkpoint."""
    orphans = [p for p in folder.glob(f".{PREFIX}*") if p.is_dir()] if folder.is_dir() else []
    for path in orphans:
        log.info("removing %s, left by an interrupted checkpoint write", path)
        shutil.rmtree(path, ignore_errors=True)
    return orphans


def latest(folder: Path) -> Path | None:
    """The newest checkpoint whose files are whole; damaged ones are skipped with a warning."""
    for path in sorted(folder.glob(f"{PREFIX}*"), reverse=True):
        try:
            _verify(path)
            return path
        except (OSError, ValueError) as exc:
            log.warning("checkpoint %s is damaged (%s): using the one before it", path, exc)
    return None


def load(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Restore weights, optimizer and RNG states; returns the saved step and extra state."""
    from safetensors.torch import load_file

    from sigerlm.model.checkpoint import CheckpointError, load_state

    state = json.loads((path / "state.json").read_text())
    weights = load_file(str(path / "model.safetensors"))
    source = str(path / "model.safetensors")
    only = trainable_names(model) if state.get("partial") else None  # the frozen rest came from init_from
    try:
        load_state(model, weights, source=source, only=only)
    except CheckpointError as exc:
        if only is None:
            raise
        raise CheckpointError(f"{source} holds the trainable tensors of another model: {exc}") from None
    tensors = load_file(str(path / "optimizer.safetensors"))
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key == "_empty":
            continue
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    for key, value in state["optimizer"]["scalars"].items():
        index, name = key.split(".", 1)
        per_param.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": per_param, "param_groups": state["optimizer"]["param_groups"]})
    _set_rng_state(state["rng"], load_file(str(path / "torch_rng.safetensors")))
    return {"step": state["step"], "extra": state["extra"]}
