"""Model folders without torch: the ``config.json`` and safetensors header readers.

``siger validate`` checks a manifest's ``model.init_from`` with these, so validating never
imports torch. ``sigerlm.model.checkpoint`` re-exports every name here.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Any

from sigerlm.errors import SigerError
from sigerlm.model.config import ConfigError, SigerConfig

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
log = logging.getLogger("sigerlm.model")


class CheckpointError(SigerError):
    """A model folder is missing, damaged or does not fit the model; the message names what."""


def read_header(path: str | Path) -> dict[str, dict[str, Any]]:
    """The tensor table of a safetensors file, checked against the file's size."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: weights file not found")
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (only {size} bytes)")
        (length,) = struct.unpack("<Q", prefix)
        if length > size - 8:
            raise CheckpointError(f"{path}: truncated or not a safetensors file (header of {length} bytes in {size})")
        try:
            header = json.loads(handle.read(length))
        except ValueError as exc:
            raise CheckpointError(f"{path}: damaged safetensors header ({exc})") from None
    header.pop("__metadata__", None)
    data = size - 8 - length
    for name, info in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0]):
        begin, end = info["data_offsets"]
        if end > data:
            raise CheckpointError(
                f"{path}: truncated: tensor '{name}' needs bytes {begin}-{end} of the data but the file has {data}"
            )
    return header


def read_config(path: str | Path) -> tuple[SigerConfig, dict[str, Any]]:
    """The ``SigerConfig`` of a model folder and the rest of its ``config.json``."""
    folder = Path(path)
    file = folder / CONFIG_FILE
    if not file.is_file():
        raise CheckpointError(f"{folder}: not a SigerLM model folder ({CONFIG_FILE} is missing)")
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise CheckpointError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{file}: not a JSON object (a model folder's config.json maps keys to values)")
    version = meta.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(f"{file}: format_version {version!r}; this SigerLM reads {FORMAT_VERSION}")
    values = dict(meta.get("backbone") or {})
    if "norm_type" not in values:
        # written before norm_type existed: the original SigerLM used LayerNorm (with a bias)
        names = read_header(folder / WEIGHTS_FILE)
        if any(n.endswith(("norm.bias", "norm_f.bias")) for n in names):
            log.info("%s: norms carry a bias: loading with norm_type=layernorm", folder)
            values["norm_type"] = "layernorm"
    try:
        config = SigerConfig.from_dict(values)
    except ConfigError as exc:
        raise CheckpointError(f"{file}: {exc}") from None
    return config, meta
