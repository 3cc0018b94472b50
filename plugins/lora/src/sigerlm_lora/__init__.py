"""sigerlm-lora: LoRA adapters for SigerLM models.

The ``lora`` transform (``register_transforms``) tunes an adapter through a manifest; the
functions here load several adapters onto one base and switch between them per request,
and merge one into a standalone model folder::

    from sigerlm_lora import load_adapter, set_adapter, merge_and_export

    name = load_adapter(model, "runs/lora-lampung/adapter")   # checks the base's hash
    set_adapter(model, name)     # or None for the base alone
    merge_and_export("runs/quickstart/model", "runs/lora-lampung/adapter", "merged")

Importing this package does not import torch; the functions do, on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "LoraConfig": "lora",
    "LoraError": "lora",
    "LoraLinear": "lora",
    "DEFAULT_TARGETS": "lora",
    "add_adapter": "lora",
    "set_adapter": "lora",
    "active_adapter": "lora",
    "adapter_names": "lora",
    "adapter_info": "lora",
    "remove_adapter": "lora",
    "merge_adapter": "lora",
    "train_only": "lora",
    "base_hash": "lora",
    "find_targets": "lora",
    "save_adapter": "files",
    "load_adapter": "files",
    "read_adapter": "files",
    "merge_and_export": "files",
    "describe": "files",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"sigerlm_lora.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'sigerlm_lora' has no attribute {name!r}")
