"""Model folders: ``config.json`` + ``model.safetensors`` (+ files adapters add), written atomically.

``config.json`` holds the format version, the public identity, the backbone's ``SigerConfig``,
the adapter that wraps it (and the block of every layer when they differ), the plugins (and
versions) used, and what the adapter adds (a tokenizer's hash). Weights are safetensors only:
no pickle is ever loaded from a user's file.

Loading checks everything before it touches a model: a truncated file names the first tensor
whose bytes are missing; missing, unexpected and mis-shaped tensors are listed by name.
Checkpoints written before ``norm_type`` existed, whose norms carry a LayerNorm bias, load
with ``norm_type=layernorm``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sigerlm.io import atomic_directory
from sigerlm.model.config import SigerConfig
from sigerlm.model.folder import (
    CONFIG_FILE,
    FORMAT_VERSION,
    WEIGHTS_FILE,
    CheckpointError,
    read_config,
    read_header,
)

__all__ = [
    "CONFIG_FILE",
    "FORMAT_VERSION",
    "WEIGHTS_FILE",
    "CheckpointError",
    "load_state",
    "read_config",
    "read_header",
    "read_tensors",
    "save_model_folder",
]


def save_model_folder(
    path: str | Path,
    tensors: Mapping[str, Tensor],
    config: SigerConfig,
    *,
    spec: Mapping[str, Any] | None = None,
    plugins: Mapping[str, str] | None = None,
    write_extra: Callable[[Path], Mapping[str, Any] | None] | None = None,
) -> Path:
    """Write a model folder atomically: the old folder stays whole until the new one is.

    ``spec`` holds the adapter (``{use, ...options}``) and, when layers differ, the block of
    every layer; ``write_extra(folder)`` writes an adapter's own files (a tokenizer) and returns
    keys for ``config.json`` (its hash). Weights that are not finite are refused."""
    from safetensors.torch import save_file

    path = Path(path)
    tensors = {name: t.detach().contiguous() for name, t in tensors.items()}
    bad = [name for name, t in tensors.items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointError(f"refusing to save {path}: tensors with NaN or infinite values: {', '.join(bad[:5])}")
    spec = dict(spec or {})
    meta = {
        "format_version": FORMAT_VERSION,
        "identity": config.identity,
        "model_type": "siger",
        "backbone": config.to_dict(),
        "adapter": spec.get("adapter"),
        "plugins": dict(plugins or {}),
        "tokenizer_hash": None,
    }
    if spec.get("blocks"):
        meta["blocks"] = spec["blocks"]
    with atomic_directory(path) as tmp:
        metadata = {"format_version": str(FORMAT_VERSION), "identity": config.identity}
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata=metadata)
        if write_extra is not None:  # an adapter's own files
            meta.update(write_extra(tmp) or {})
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return path


def read_tensors(path: str | Path) -> dict[str, Tensor]:
    """Load every tensor of a safetensors file (after checking it is whole)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    read_header(path)
    try:
        return load_file(str(path))
    except SafetensorError as exc:
        raise CheckpointError(f"{path}: cannot read weights: {exc}") from None


def load_state(
    module: nn.Module, tensors: Mapping[str, Tensor], *, source: str = "checkpoint", only: Collection[str] | None = None
) -> None:
    """Copy tensors into a module after checking names and shapes; the error lists each problem.
    ``only``: the module's tensors the source holds (the trainable part of a partly frozen model)."""
    expected = module.state_dict()
    if only is not None:
        expected = {name: value for name, value in expected.items() if name in only}
    missing = sorted(set(expected) - set(tensors))
    unexpected = sorted(set(tensors) - set(expected))
    mismatched = [
        f"'{name}' is {tuple(tensors[name].shape)} in the {source} but {tuple(expected[name].shape)} in the model"
        for name in sorted(set(expected) & set(tensors))
        if tuple(tensors[name].shape) != tuple(expected[name].shape)
    ]
    problems = []
    if missing:
        problems.append("missing tensors: " + ", ".join(f"'{n}'" for n in missing))
    if unexpected:
        problems.append("unexpected tensors: " + ", ".join(f"'{n}'" for n in unexpected))
    problems += mismatched
    if problems:
        raise CheckpointError(f"{source} does not fit the model: " + "; ".join(problems))
    with torch.no_grad():
        for name, value in expected.items():
            value.copy_(tensors[name])
