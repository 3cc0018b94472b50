"""``SigerConfig``: the backbone's shape and initialisation, with named profiles.

This module imports no torch, so manifests are validated without it.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import asdict, dataclass, field, fields
from importlib import metadata
from typing import Any

from sigerlm.errors import SigerError, did_you_mean

NORMS = ("rmsnorm", "layernorm")
ACTIVATIONS = ("silu", "gelu", "relu")
#: the scans core runs with torch ops (``sigerlm.model.scan``)
SCANS = ("reference", "chunked")
#: the entry-point group where an installed package names its scan back-ends:
#: ``fused = "sigerlm_kernels.backend:FUSED"`` (sigerlm-kernels; the default ``scan``)
SCAN_GROUP = "sigerlm.scans"
#: back-ends registered in this process (``register_scan``), beside the installed ones
SCAN_BACKENDS: dict[str, str] = {}


def register_scan(name: str, target: str) -> None:
    """Make ``scan: name`` mean the back-end object at ``target`` (``"package.module:attribute"``)
    in this process, as an installed package's ``sigerlm.scans`` entry point does; see
    ``sigerlm.model.block`` for what a back-end provides."""
    if name in SCANS or not name.isidentifier() or ":" not in target:
        raise ConfigError(f"cannot register scan back-end {name!r} -> {target!r}: a new name and a 'module:attribute'")
    SCAN_BACKENDS[name] = target


@functools.cache
def _installed_scans() -> dict[str, str]:
    return {ep.name: ep.value for ep in metadata.entry_points(group=SCAN_GROUP)}


def scan_backends() -> dict[str, str]:
    """Every scan back-end beyond core's, ``{name: "module:attribute"}``: the installed ones and
    those registered in this process (which win). Nothing is imported."""
    return {**_installed_scans(), **SCAN_BACKENDS}


class ConfigError(SigerError, ValueError):
    """An invalid SigerConfig value; the message names the field and what it accepts."""


@dataclass
class SigerConfig:
    d_model: int = 256  # width of the residual stream
    n_layers: int = 8  # number of blocks
    d_state: int = 16  # SSM state size per channel (n)
    d_conv: int = 4  # depthwise causal convolution width
    expand: int = 2  # d_inner = expand * d_model
    dt_rank: int | str = "auto"  # rank of the dt projection; "auto" = ceil(d_model / 16)
    dt_min: float = 0.001  # dt is initialised log-uniformly in [dt_min, dt_max]
    dt_max: float = 0.1
    dt_init_floor: float = 1e-4  # lower clamp of the initial dt
    dt_scale: float = 1.0  # scales the dt_proj weight initialisation
    dropout: float = 0.0  # after each block's out_proj
    norm_type: str = "rmsnorm"  # rmsnorm | layernorm
    norm_eps: float = 1e-5
    activation: str = "silu"  # silu | gelu | relu
    max_seq_len: int = 128  # the training window
    scan: str = "fused"  # selective-scan back-end: fused (sigerlm-kernels) | chunked (pure PyTorch) | reference (loop)
    block: str = "ssm"  # the registered block every layer uses
    model_alias: str | None = None  # public identity SIGER-<ALIAS>
    profile: str | None = field(default=None, compare=False)  # the profile this came from

    def __post_init__(self) -> None:
        problems = []
        for name in ("d_model", "n_layers", "d_state", "d_conv", "expand", "max_seq_len"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                problems.append(f"{name} must be a positive integer, got {value!r}")
        if self.dt_rank != "auto" and (not isinstance(self.dt_rank, int) or self.dt_rank < 1):
            problems.append(f"dt_rank must be 'auto' or a positive integer, got {self.dt_rank!r}")
        for name in ("dt_min", "dt_max", "dt_init_floor", "dt_scale", "norm_eps"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0:
                problems.append(f"{name} must be a positive number, got {value!r}")
        if (
            isinstance(self.dt_min, (int, float))
            and isinstance(self.dt_max, (int, float))
            and self.dt_min > self.dt_max
        ):
            problems.append(f"dt_min ({self.dt_min}) must not exceed dt_max ({self.dt_max})")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            problems.append(f"dropout must be in [0, 1), got {self.dropout!r}")
        scans = (*SCANS, *scan_backends())
        if self.scan == "fused" and "fused" not in scans:  # said once, with where it comes from
            scans += ("fused",)
            problems.append("scan 'fused' (the default) needs sigerlm-kernels: pip install it, or set scan: chunked")
        for name, allowed in (("norm_type", NORMS), ("activation", ACTIVATIONS), ("scan", scans)):
            value = getattr(self, name)
            if value not in allowed:
                hint = did_you_mean(str(value), allowed)
                problems.append(
                    f"{name} must be one of {', '.join(allowed)}, got {value!r}" + (f" ({hint})" if hint else "")
                )
        if self.model_alias is not None and (not isinstance(self.model_alias, str) or not self.model_alias.strip()):
            problems.append(f"model_alias must be a non-empty string or null, got {self.model_alias!r}")
        if problems:
            raise ConfigError("invalid SigerConfig: " + "; ".join(problems))

    # -- derived -----------------------------------------------------------------------------------
    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def dt_rank_value(self) -> int:
        return math.ceil(self.d_model / 16) if self.dt_rank == "auto" else int(self.dt_rank)

    @property
    def identity(self) -> str:
        """The public model name: ``SIGER``, or ``SIGER-<ALIAS>`` (an alias never replaces the base)."""
        return f"SIGER-{self.model_alias.strip().upper()}" if self.model_alias else "SIGER"

    # -- (de)serialisation -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SigerConfig:
        unknown = [k for k in data if k not in cls.field_names()]
        if unknown:
            hints = [did_you_mean(k, cls.field_names()) for k in unknown]
            raise ConfigError(
                "unknown SigerConfig field(s): "
                + ", ".join(f"'{k}'" + (f" ({h})" if h else "") for k, h in zip(unknown, hints, strict=True))
            )
        return cls(**data)

    @classmethod
    def from_profile(cls, profile: str | None = None, **overrides: Any) -> SigerConfig:
        """A profile's values with ``overrides``; profile None means ``$SIGER_MODEL_PROFILE`` or small."""
        name = profile or os.environ.get("SIGER_MODEL_PROFILE") or "small"
        if name not in PROFILES:
            hint = did_you_mean(name, PROFILES)
            raise ConfigError(
                f"unknown model profile '{name}'; profiles: {', '.join(PROFILES)}" + (f" ({hint})" if hint else "")
            )
        values = {**PROFILES[name], **overrides}
        values.setdefault("profile", name)
        return cls.from_dict(values)


#: Named shapes. ``tiny`` is for tests; the rest are the sizes the project trains and measures.
PROFILES: dict[str, dict[str, Any]] = {
    "tiny": dict(d_model=16, n_layers=2, d_state=4, d_conv=4, expand=2, max_seq_len=32),
    "small": dict(d_model=256, n_layers=8, d_state=16, max_seq_len=128),
    "small_context": dict(d_model=512, n_layers=12, d_state=16, max_seq_len=512),
    "moe_dense_base": dict(d_model=384, n_layers=10, d_state=16, max_seq_len=512),
    "small_moe": dict(d_model=384, n_layers=10, d_state=16, max_seq_len=512, block="moe"),
    "medium": dict(d_model=512, n_layers=12, d_state=16, max_seq_len=1024),
}
