"""Low-rank adapters (LoRA) on a model's ``nn.Linear`` layers, chosen by module name.

A targeted ``nn.Linear`` is replaced, in place, by a ``LoraLinear`` that keeps the same
``weight`` and ``bias`` (so the base tensors keep their names and a base checkpoint still
loads) and holds any number of named adapters: ``lora_A.<name>`` ``(r, in)`` and
``lora_B.<name>`` ``(out, r)``, scaled by ``alpha / r``. One adapter is active at a time;
``set_adapter(model, name)`` switches every layer at once, ``None`` runs the base alone.

B starts at zero, so a new adapter leaves the model's outputs unchanged until it is trained.
Each adapter remembers the hash of the base tensors it was made on (``base_hash``): an adapter
file applied to a different base is refused.

Works on any ``nn.Module`` (a ``SigerLM``, the train step's ``AdaptedModel``, a plugin's
block) because it only looks at module names and types.
"""

from __future__ import annotations

import fnmatch
import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sigerlm.errors import SigerError
from sigerlm_lora.options import DEFAULT_TARGETS

LORA_MARKERS = (".lora_A.", ".lora_B.")


class LoraError(SigerError):
    """An adapter does not fit: wrong base, unknown name, no matching layers; the message says which."""


@dataclass
class LoraConfig:
    rank: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_TARGETS))

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise LoraError(f"LoRA rank must be at least 1, got {self.rank}")
        if not 0 <= self.dropout < 1:
            raise LoraError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise LoraError("LoRA needs at least one target module name")

    @property
    def scaling(self) -> float:
        return self.alpha / self.rank

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class AdapterInfo:
    """What the model knows of one adapter."""

    name: str
    config: LoraConfig
    base_hash: str
    modules: list[str]
    source: str | None = None  # the folder it was loaded from


class LoraLinear(nn.Linear):
    """An ``nn.Linear`` (same ``weight`` and ``bias``) plus named low-rank adapters."""

    def __init__(self, base: nn.Linear):
        nn.Module.__init__(self)
        self.in_features, self.out_features = base.in_features, base.out_features
        self.weight = base.weight
        self.bias = base.bias
        self.lora_A = nn.ParameterDict()
        self.lora_B = nn.ParameterDict()
        self.lora_dropout = nn.ModuleDict()
        self.scaling: dict[str, float] = {}
        self.active: str | None = None

    def add(self, name: str, config: LoraConfig) -> None:
        w = self.weight
        a = torch.empty(config.rank, self.in_features, dtype=w.dtype, device=w.device)
        nn.init.kaiming_uniform_(a, a=math.sqrt(5))
        self.lora_A[name] = nn.Parameter(a)
        self.lora_B[name] = nn.Parameter(torch.zeros(self.out_features, config.rank, dtype=w.dtype, device=w.device))
        self.lora_dropout[name] = nn.Dropout(config.dropout) if config.dropout > 0 else nn.Identity()
        self.scaling[name] = config.scaling

    def remove(self, name: str) -> None:
        for table in (self.lora_A, self.lora_B, self.lora_dropout):
            if name in table:
                del table[name]
        self.scaling.pop(name, None)
        if self.active == name:
            self.active = None

    def forward(self, x: Tensor) -> Tensor:
        out = F.linear(x, self.weight, self.bias)
        name = self.active
        if name is not None and name in self.lora_A:
            # scale the rank-r tensor, not the full-width one: no extra (.., out) temporaries
            low = F.linear(self.lora_dropout[name](x), self.lora_A[name]) * self.scaling[name]
            out = out + F.linear(low, self.lora_B[name])
        return out

    def delta(self, name: str) -> Tensor:
        """``scaling * B @ A`` in float64: what merging adds to ``weight``."""
        return (self.lora_B[name].detach().double() @ self.lora_A[name].detach().double()) * self.scaling[name]

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, adapters={list(self.lora_A.keys())}, active={self.active}"


# -- finding layers ------------------------------------------------------------------------------
def _matches(name: str, pattern: str) -> bool:
    """A bare name (``in_proj``) matches the last part of a module's name; a pattern with a dot or
    a wildcard (``backbone.layers.0.*``, ``*.mixer.out_proj``) matches the whole name."""
    if any(c in pattern for c in ".*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return name.rsplit(".", 1)[-1] == pattern


def find_targets(model: nn.Module, targets: Iterable[str]) -> list[tuple[str, nn.Linear]]:
    """The ``nn.Linear`` modules whose names match ``targets``; an error lists what there is."""
    targets = list(targets)
    found = [
        (n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and any(_matches(n, t) for t in targets)
    ]
    if not found:
        linear = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, nn.Linear) and n})
        raise LoraError(
            f"no nn.Linear module matches the LoRA targets {targets}; this model's linear layers are named: "
            + (", ".join(linear) or "(none)")
        )
    return found


def _wrap(model: nn.Module, name: str, module: nn.Linear) -> LoraLinear:
    if isinstance(module, LoraLinear):
        return module
    wrapped = LoraLinear(module)
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, wrapped)
    return wrapped


def lora_layers(model: nn.Module) -> dict[str, LoraLinear]:
    return {n: m for n, m in model.named_modules() if isinstance(m, LoraLinear)}


def _registry(model: nn.Module) -> dict[str, AdapterInfo]:
    if not hasattr(model, "_lora_adapters"):
        object.__setattr__(model, "_lora_adapters", {})
    return model._lora_adapters  # type: ignore[no-any-return]


# -- hashing the base ----------------------------------------------------------------------------
def is_lora_tensor(name: str) -> bool:
    return any(marker in f".{name}" for marker in LORA_MARKERS)


def tensors_hash(tensors: Mapping[str, Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of the (non-LoRA) tensors, in name order."""
    h = hashlib.sha256()
    for name in sorted(tensors):
        if is_lora_tensor(name):
            continue
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{str(t.dtype).removeprefix('torch.')}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def base_hash(model: nn.Module) -> str:
    """The hash of the model's base tensors (adapters left out): what an adapter is tied to."""
    return tensors_hash(model.state_dict())


# -- adapters ------------------------------------------------------------------------------------
def add_adapter(
    model: nn.Module,
    name: str = "default",
    config: LoraConfig | None = None,
    *,
    modules: Iterable[str] | None = None,
    base: str | None = None,
) -> AdapterInfo:
    """Add a new (zero) adapter on the layers ``config.targets`` match (or exactly ``modules``)
    and make it active."""
    config = config or LoraConfig()
    registry = _registry(model)
    if name in registry:
        raise LoraError(f"the model already has an adapter named '{name}' (adapters: {', '.join(registry)})")
    if not name or "." in name:
        raise LoraError(f"adapter name {name!r}: give a non-empty name without dots")
    if base is None:
        base = base_hash(model)
    if modules is None:
        chosen = find_targets(model, config.targets)
    else:
        table = dict(model.named_modules())
        missing = [m for m in modules if not isinstance(table.get(m), nn.Linear)]
        if missing:
            raise LoraError(f"the adapter's layers are not linear layers of this model: {', '.join(missing[:5])}")
        chosen = [(m, table[m]) for m in modules]  # type: ignore[misc]
    names = []
    for module_name, module in chosen:
        layer = _wrap(model, module_name, module)
        layer.add(name, config)
        names.append(module_name)
    info = AdapterInfo(name, config, base, names)
    registry[name] = info
    set_adapter(model, name)
    return info


def adapter_names(model: nn.Module) -> list[str]:
    return list(_registry(model))


def adapter_info(model: nn.Module, name: str) -> AdapterInfo:
    registry = _registry(model)
    if name not in registry:
        raise LoraError(f"no adapter named '{name}' (adapters: {', '.join(registry) or 'none'})")
    return registry[name]


def active_adapter(model: nn.Module) -> str | None:
    return getattr(model, "_lora_active", None)


def set_adapter(model: nn.Module, name: str | None) -> None:
    """Make ``name`` the active adapter of every layer (``None``: the base model alone).
    Switching changes no weights: switching back gives exactly the same outputs."""
    if name is not None:
        adapter_info(model, name)
    for layer in lora_layers(model).values():
        layer.active = name
    object.__setattr__(model, "_lora_active", name)


def remove_adapter(model: nn.Module, name: str) -> None:
    adapter_info(model, name)
    for layer in lora_layers(model).values():
        layer.remove(name)
    del _registry(model)[name]
    if active_adapter(model) == name:
        set_adapter(model, None)


def adapter_tensors(model: nn.Module, name: str) -> dict[str, Tensor]:
    """One adapter's tensors, named ``<module>.lora_A`` / ``<module>.lora_B`` (no adapter name)."""
    info = adapter_info(model, name)
    layers = lora_layers(model)
    out: dict[str, Tensor] = {}
    for module_name in info.modules:
        layer = layers[module_name]
        out[f"{module_name}.lora_A"] = layer.lora_A[name].detach().contiguous()
        out[f"{module_name}.lora_B"] = layer.lora_B[name].detach().contiguous()
    return out


def adapter_parameters(model: nn.Module, name: str) -> list[nn.Parameter]:
    info = adapter_info(model, name)
    layers = lora_layers(model)
    params = []
    for module_name in info.modules:
        params += [layers[module_name].lora_A[name], layers[module_name].lora_B[name]]
    return params


def train_only(model: nn.Module, name: str) -> tuple[int, int]:
    """Freeze everything but adapter ``name``; returns (trainable, total) parameter counts."""
    keep = {id(p) for p in adapter_parameters(model, name)}
    for p in model.parameters():
        p.requires_grad_(id(p) in keep)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())


def merge_adapter(model: nn.Module, name: str) -> None:
    """Add adapter ``name`` into the base weights (float64 sums) and remove every adapter layer."""
    info = adapter_info(model, name)
    layers = lora_layers(model)
    with torch.no_grad():
        for module_name in info.modules:
            layer = layers[module_name]
            layer.weight.copy_((layer.weight.double() + layer.delta(name)).to(layer.weight.dtype))
    for module_name, layer in layers.items():
        plain = nn.Linear(
            layer.in_features,
            layer.out_features,
            bias=layer.bias is not None,
            device=layer.weight.device,
            dtype=layer.weight.dtype,
        )
        plain.weight, plain.bias = layer.weight, layer.bias
        parent_name, _, child = module_name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, plain)
    _registry(model).clear()
    object.__setattr__(model, "_lora_active", None)
