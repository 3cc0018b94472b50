"""Adapter folders, and merging an adapter into a standalone model folder.

An adapter folder holds ``adapter.safetensors`` (each targeted layer's ``<module>.lora_A``
and ``<module>.lora_B``) and ``adapter_config.json``: format version, rank, alpha, dropout,
targets, the exact layers, and the base it belongs to (``base_hash`` over the base's tensors,
its identity and, when known, the folder it came from). Both are written atomically.

Loading checks the folder before it touches the model: a truncated weights file names the
tensor, missing or mis-shaped tensors are listed, and an adapter made on another base is
refused with both hashes.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from sigerlm.io import atomic_directory
from sigerlm.model.checkpoint import (
    CONFIG_FILE,
    WEIGHTS_FILE,
    read_config,
    read_header,
    read_tensors,
    save_model_folder,
)
from sigerlm_lora.lora import (
    LoraConfig,
    LoraError,
    adapter_info,
    adapter_names,
    adapter_tensors,
    add_adapter,
    base_hash,
    lora_layers,
    set_adapter,
    tensors_hash,
)

FORMAT_VERSION = 1
ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"


def save_adapter(
    model: nn.Module,
    folder: str | Path,
    name: str = "default",
    *,
    base_folder: str | Path | None = None,
    identity: str | None = None,
    plugins: Mapping[str, str] | None = None,
) -> Path:
    """Write adapter ``name`` of ``model`` to ``folder`` (atomically)."""
    from safetensors.torch import save_file

    info = adapter_info(model, name)
    tensors = adapter_tensors(model, name)
    config = getattr(model, "config", None)
    meta = {
        "format_version": FORMAT_VERSION,
        "kind": "lora",
        "name": name,
        **info.config.to_dict(),
        "modules": info.modules,
        "base_hash": info.base_hash,
        "base_identity": identity or getattr(config, "identity", None),
        "base_model": str(base_folder) if base_folder is not None else None,
        "plugins": dict(plugins or {}),
    }
    folder = Path(folder)
    with atomic_directory(folder) as tmp:
        save_file(tensors, str(tmp / ADAPTER_WEIGHTS), metadata={"format_version": str(FORMAT_VERSION), "kind": "lora"})
        (tmp / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return folder


def read_adapter(folder: str | Path) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """An adapter folder's config and tensors, checked against each other."""
    folder = Path(folder)
    file = folder / ADAPTER_CONFIG
    if not file.is_file():
        raise LoraError(f"{folder}: not a LoRA adapter folder ({ADAPTER_CONFIG} is missing)")
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise LoraError(f"{file}: not valid JSON ({exc})") from None
    if meta.get("format_version") != FORMAT_VERSION or meta.get("kind") != "lora":
        raise LoraError(
            f"{file}: not a LoRA adapter of format {FORMAT_VERSION} "
            f"(format_version {meta.get('format_version')!r}, kind {meta.get('kind')!r})"
        )
    for key in ("rank", "alpha", "modules", "base_hash"):
        if key not in meta:
            raise LoraError(f"{file}: '{key}' is missing")
    weights = folder / ADAPTER_WEIGHTS
    read_header(weights)  # a truncated file names its first incomplete tensor
    tensors = read_tensors(weights)
    expected = {f"{m}.lora_{p}" for m in meta["modules"] for p in "AB"}
    missing, unexpected = sorted(expected - set(tensors)), sorted(set(tensors) - expected)
    if missing or unexpected:
        raise LoraError(
            f"{weights} does not match {ADAPTER_CONFIG}: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    rank = int(meta["rank"])
    for m in meta["modules"]:
        a, b = tensors[f"{m}.lora_A"], tensors[f"{m}.lora_B"]
        if a.ndim != 2 or b.ndim != 2 or a.shape[0] != rank or b.shape[1] != rank:
            raise LoraError(
                f"{weights}: '{m}' has lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}, not rank {rank}"
            )
    return meta, tensors


def _config(meta: Mapping[str, Any]) -> LoraConfig:
    return LoraConfig(
        rank=int(meta["rank"]),
        alpha=float(meta["alpha"]),
        dropout=float(meta.get("dropout", 0.0)),
        targets=list(meta.get("targets") or meta["modules"]),
    )


def _mismatch(folder: Path, meta: Mapping[str, Any], have: str, what: str) -> LoraError:
    made = meta["base_hash"]
    where = f" ({meta['base_model']})" if meta.get("base_model") else ""
    return LoraError(
        f"adapter {folder} was trained on base {made[:12]}{where} ({meta.get('base_identity') or '?'}), "
        f"but {what} is {have[:12]}: an adapter only fits the exact base it was trained on"
    )


def load_adapter(
    model: nn.Module, folder: str | Path, name: str | None = None, *, trainable: bool = False, activate: bool = True
) -> str:
    """Add the adapter saved in ``folder`` to ``model`` under ``name`` (default: its saved name,
    else the folder's name). Refused when the model's base tensors are not the adapter's base."""
    folder = Path(folder)
    meta, tensors = read_adapter(folder)
    have = base_hash(model)
    if have != meta["base_hash"]:
        raise _mismatch(folder, meta, have, "this model's base")
    name = name or meta.get("name") or folder.name
    if name in adapter_names(model):
        raise LoraError(f"the model already has an adapter named '{name}': give another name")
    previous = getattr(model, "_lora_active", None)
    info = add_adapter(model, name, _config(meta), modules=meta["modules"], base=have)
    info.source = str(folder)
    layers = lora_layers(model)
    with torch.no_grad():
        for m in meta["modules"]:
            layer = layers[m]
            for part, table in (("A", layer.lora_A), ("B", layer.lora_B)):
                value = tensors[f"{m}.lora_{part}"]
                if tuple(value.shape) != tuple(table[name].shape):
                    raise LoraError(
                        f"{folder}: '{m}.lora_{part}' is {tuple(value.shape)}, "
                        f"the layer needs {tuple(table[name].shape)}"
                    )
                table[name].copy_(value)
                table[name].requires_grad_(trainable)
    set_adapter(model, name if activate else previous)
    return name


def merge_and_export(base: str | Path, adapter: str | Path, out: str | Path) -> Path:
    """Write a plain model folder: ``base`` with ``adapter`` added into its weights.

    Works on the folders alone (no model class needed): the merged folder keeps the base's
    config, adapter spec, tokenizer hash and extra files (the tokenizer), and records the
    merged adapter in ``merged_adapter.json``. Sums are taken in float64.
    """
    base, adapter, out = Path(base), Path(adapter), Path(out)
    config, base_meta = read_config(base)
    tensors = read_tensors(base / WEIGHTS_FILE)
    meta, lora = read_adapter(adapter)
    have = tensors_hash(tensors)
    if have != meta["base_hash"]:
        raise _mismatch(adapter, meta, have, f"the base folder {base}")
    scaling = float(meta["alpha"]) / int(meta["rank"])
    merged = dict(tensors)
    for m in meta["modules"]:
        key = f"{m}.weight"
        if key not in merged:
            raise LoraError(f"{base}: the adapter's layer '{m}' has no weight '{key}' in the base")
        w = merged[key]
        delta = (lora[f"{m}.lora_B"].double() @ lora[f"{m}.lora_A"].double()) * scaling
        if tuple(delta.shape) != tuple(w.shape):
            raise LoraError(f"{adapter}: '{m}' adds {tuple(delta.shape)} to a {tuple(w.shape)} weight")
        merged[key] = (w.double() + delta).to(w.dtype)
    if out.resolve() == base.resolve():
        raise LoraError(f"--out {out} is the base folder: write the merged model somewhere else")

    def copy_extra(folder: Path) -> dict[str, Any]:
        for item in base.iterdir():
            if item.name in (CONFIG_FILE, WEIGHTS_FILE) or item.name.startswith("."):
                continue
            target = folder / item.name
            shutil.copytree(item, target) if item.is_dir() else shutil.copy2(item, target)
        (folder / "merged_adapter.json").write_text(json.dumps(provenance, indent=2) + "\n", encoding="utf-8")
        return {"tokenizer_hash": base_meta.get("tokenizer_hash")}

    provenance = {
        key: meta.get(key) for key in ("name", "rank", "alpha", "targets", "modules", "base_hash", "base_model")
    }
    provenance["adapter"] = str(adapter)
    spec = {key: base_meta[key] for key in ("adapter", "blocks") if base_meta.get(key)}
    return save_model_folder(
        out,
        merged,
        config,
        spec=spec,
        plugins={**(base_meta.get("plugins") or {}), **(meta.get("plugins") or {})},
        write_extra=copy_extra,
    )


def describe(folder: str | Path) -> dict[str, Any]:
    """An adapter folder's config plus its parameter count (for ``siger lora info``)."""
    meta, tensors = read_adapter(folder)
    return {**meta, "parameters": sum(t.numel() for t in tensors.values())}
