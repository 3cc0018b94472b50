"""Model folders: ``config.json`` + ``model.safetensors`` (+ files adapters add), written atomically.

``config.json`` holds the format version, the public identity, the backbone's ``SigerConfig``,
the adapter that wraps it, the plugins (and versions) used, and the tokenizer's hash when the
adapter has one. Weights are safetensors only: no pickle is ever loaded from a user's file.

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


def save_model_folder(
    path: str | Path,
    tensors: Mapping[str, Tensor],
    config: SigerConfig,
    *,
    adapter: Mapping[str, Any] | None = None,
    plugins: Mapping[str, str] | None = None,
    tokenizer_hash: str | None = None,
    extra_files: Mapping[str, bytes | str] | None = None,
    write_extra: Callable[[Path], Any] | None = None,
) -> Path:
    """Write a model folder atomically: the old folder stays whole until the new one is."""
    from safetensors.torch import save_file

    path = Path(path)
    meta = {
        "format_version": FORMAT_VERSION,
        "identity": config.identity,
        "model_type": "siger",
        "backbone": config.to_dict(),
        "adapter": dict(adapter) if adapter is not None else None,
        "plugins": dict(plugins or {}),
        "tokenizer_hash": tokenizer_hash,
    }
    tensors = {name: t.detach().contiguous() for name, t in tensors.items()}
    with atomic_directory(path) as tmp:
        save_file(
            tensors,
            str(tmp / WEIGHTS_FILE),
            metadata={"format_version": str(FORMAT_VERSION), "identity": config.identity},
        )
        (tmp / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        for name, content in (extra_files or {}).items():
            data = content.encode("utf-8") if isinstance(content, str) else content
            (tmp / name).write_bytes(data)
        if write_extra is not None:  # e.g. an adapter's tokenizer files
            write_extra(tmp)
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


def save_backbone(path: str | Path, backbone: nn.Module, **meta: Any) -> Path:
    """Save a backbone alone (its tensors under ``backbone.``)."""
    tensors = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    return save_model_folder(path, tensors, backbone.config, **meta)


def load_backbone(path: str | Path, plugin_manager: Any = None) -> nn.Module:
    """Build the backbone a model folder describes and load its weights."""
    from sigerlm.model.backbone import build_backbone

    config, _ = read_config(path)
    tensors = read_tensors(Path(path) / WEIGHTS_FILE)
    backbone = build_backbone(config, plugin_manager)
    own = {k.removeprefix("backbone."): v for k, v in tensors.items() if k.startswith("backbone.")}
    load_state(backbone, own, source=str(Path(path) / WEIGHTS_FILE))
    return backbone
