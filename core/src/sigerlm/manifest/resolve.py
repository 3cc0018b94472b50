"""Resolving a manifest: every component found in the registry and its options validated,
every problem collected with the file, line, path and fix, before any work starts."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError

from sigerlm.errors import ComponentError, ManifestError, Problem, closest
from sigerlm.manifest.schema import (
    FORMAT_VERSION,
    PLACEMENT,
    ComponentSpec,
    Manifest,
    component_refs,
    missing_inputs,
    output_problems,
)
from sigerlm.manifest.source import ManifestSource, apply_overrides, format_path, interpolate, read_manifest

if TYPE_CHECKING:
    from sigerlm.model.config import SigerConfig
    from sigerlm.plugins import SigerPluginManager
    from sigerlm.registry import Component

#: shape fields of SigerConfig: a folder's weights fit only a model with the same values
SHAPE_FIELDS = ("d_model", "n_layers", "d_state", "d_conv", "expand", "dt_rank")


# -- validation ----------------------------------------------------------------------------------
def _model_at(model: type[BaseModel], loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The pydantic model that owns the field at ``loc`` (to suggest valid keys)."""
    import typing

    current: Any = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)):
            return None
        info = current.model_fields.get(str(part))
        if info is None:
            return None
        current = info.annotation
        # unwrap Optional[X], list[X], dict[str, X]
        for _ in range(3):
            args = [a for a in typing.get_args(current) if a is not type(None)]
            if isinstance(current, type) and issubclass(current, BaseModel):
                break
            if not args:
                break
            current = args[-1]
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def pydantic_problems(
    exc: ValidationError,
    model: type[BaseModel],
    prefix: tuple[str | int, ...] = (),
    source: ManifestSource | None = None,
) -> list[Problem]:
    """Turn a pydantic error into problems with paths, expectations and hints."""
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        path = prefix + loc
        kind = err["type"]
        hint = None
        if kind == "extra_forbidden":
            owner = _model_at(model, loc[:-1])
            valid = list(owner.model_fields) if owner else []
            suggestion = closest(str(loc[-1]), valid)
            message = f"unknown key '{loc[-1]}'"
            if suggestion:
                hint = f"did you mean '{suggestion}'?"
            elif valid:
                hint = f"valid keys: {', '.join(valid)}"
            else:
                hint = "this component takes no options"
        elif kind == "missing":
            message = "required key is missing"
        elif kind == "literal_error" and path == ("siger",):
            message = f"unsupported manifest format {err.get('input')!r}"
            hint = f"this SigerLM reads format siger: {FORMAT_VERSION}"
        else:
            message = err["msg"]
            if "input" in err and not isinstance(err["input"], (dict, list)):
                message += f", got {err['input']!r}"
        problems.append(Problem(format_path(path), message, hint, source.line(path) if source else None))
    return problems


def parse_manifest(source: ManifestSource) -> Manifest:
    """Validate the manifest's own structure (components are checked by ``resolve``)."""
    interpolate(source)
    try:
        return Manifest.model_validate(source.data)
    except ValidationError as exc:
        raise ManifestError(pydantic_problems(exc, Manifest, source=source), source.name) from None


@dataclass
class ResolvedComponent:
    path: tuple[str | int, ...]
    kind: str
    component: Component
    options: BaseModel
    placement: dict[str, Any] = field(default_factory=dict)  # a model.blocks entry's every / layers

    def build(self, *context: Any) -> Any:
        return self.component.build(*context, options=self.options)


@dataclass
class ResolvedManifest:
    """A validated manifest whose components were found and whose options were checked."""

    manifest: Manifest
    source: ManifestSource
    components: dict[tuple[str | int, ...], ResolvedComponent]
    config: SigerConfig | None = None

    def component(self, *path: str | int) -> ResolvedComponent:
        return self.components[tuple(path)]

    def layer_blocks(self) -> list[ResolvedComponent]:
        """The resolved block of every layer (``model.block``, then ``model.blocks`` placed)."""
        assert self.config is not None and self.manifest.model is not None
        entries = [self.components[("model", "blocks", j)] for j in range(len(self.manifest.model.blocks))]
        chosen = place_blocks(self.config.n_layers, [e.placement for e in entries])
        default = self.components[("model", "block")]
        return [default if j is None else entries[j] for j in chosen]

    def to_dict(self) -> dict[str, Any]:
        """The manifest as run: qualified component names and every option filled in."""
        data = self.manifest.model_dump(mode="json", exclude_none=True)
        for path, resolved in self.components.items():
            target: Any = data
            for part in path:
                target = target[part]
            target.clear()
            target["use"] = resolved.component.qualified_name
            target.update(resolved.options.model_dump(mode="json"))
            target.update(resolved.placement)
        if self.config is not None:
            # every field, so a later change of a profile's defaults cannot change this run
            config = self.config.to_dict()
            config.pop("block")
            data["model"]["profile"] = config.pop("profile")
            data["model"]["config"] = config
        return data

    def digest(self) -> str:
        """A hash of the resolved manifest (minus the run folder), to tell whether a resume fits."""
        data = self.to_dict()
        data.pop("out_dir", None)
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()


def place_blocks(n_layers: int, placements: Sequence[Mapping[str, Any]]) -> list[int | None]:
    """For every layer, the index of the ``model.blocks`` entry it uses (None: the default
    block). ``every: K`` places an entry on layers K-1, 2K-1, ...; ``layers: [...]`` on those;
    later entries win. Entries without placement must give every layer its block. Raises
    ``ValueError`` naming the entry."""
    if not placements:
        return [None] * n_layers
    placed = [any(key in p for key in PLACEMENT) for p in placements]
    if not any(placed):
        if len(placements) != n_layers:
            raise ValueError(
                f"{len(placements)} blocks for {n_layers} layers: give one per layer, or place entries with "
                "every: K or layers: [...]"
            )
        return list(range(n_layers))
    layers: list[int | None] = [None] * n_layers
    for j, p in enumerate(placements):
        if not placed[j]:
            raise ValueError(f"blocks[{j}] has no every: K or layers: [...] while other entries do")
        if "every" in p:
            every = p["every"]
            if not isinstance(every, int) or isinstance(every, bool) or not 1 <= every <= n_layers:
                raise ValueError(f"blocks[{j}].every must be an integer in [1, {n_layers}], got {every!r}")
            chosen = list(range(every - 1, n_layers, every))
        else:
            chosen = p["layers"]
            if (
                not isinstance(chosen, list)
                or not chosen
                or any(not isinstance(i, int) or isinstance(i, bool) or not 0 <= i < n_layers for i in chosen)
            ):
                raise ValueError(f"blocks[{j}].layers must list layer indices in [0, {n_layers}), got {chosen!r}")
        for i in chosen:
            layers[i] = j
    return layers


def _init_from(manifest: Manifest, source: ManifestSource, problems: list[Problem]) -> SigerConfig | None:
    """The model's config when it starts from ``model.init_from``: the folder's own (with
    ``model.config`` on top), or with ``strict: false`` the profile's. Shapes are checked here,
    before any work; the folder's blocks and adapter fill in what the manifest leaves out."""
    from sigerlm.model.config import ConfigError, SigerConfig
    from sigerlm.model.folder import CheckpointError, read_config

    model = manifest.model
    assert model is not None and model.init_from is not None
    init = model.init_source()
    assert init is not None
    where: tuple[str | int, ...] = ("model", "init_from")
    line = source.line(where)
    if model.profile is not None and init.strict:
        problems.append(
            Problem(
                "model.profile",
                "give either model.profile or model.init_from: the folder's config fixes the model's shape",
                "to warm-start a model of another shape write init_from: {path: FOLDER, strict: false}",
                source.line(("model", "profile")),
            )
        )
        return None
    try:
        saved, meta = read_config(init.path)
        if model.profile is not None:
            config = SigerConfig.from_profile(model.profile, **model.config)
        else:
            config = SigerConfig.from_dict({**saved.to_dict(), **model.config}) if model.config else saved
    except (CheckpointError, ConfigError) as exc:
        problems.append(Problem(format_path(where), str(exc), None, line))
        return None
    fields = SHAPE_FIELDS if init.strict else ("d_model",)
    changed = [f for f in fields if getattr(config, f) != getattr(saved, f)]
    if changed:
        shapes = ", ".join(f"{f} {getattr(saved, f)} in the folder vs {getattr(config, f)} here" for f in changed)
        problems.append(
            Problem(
                format_path(where),
                f"{init.path} holds a model of d_model {saved.d_model} x n_layers {saved.n_layers}, the manifest "
                f"asks for d_model {config.d_model} x n_layers {config.n_layers}: {shapes}",
                "strict: false warm-starts another n_layers, blocks or head, never another d_model"
                if init.strict
                else "a warm start copies tensors of equal shape: it needs the folder's d_model",
                line,
            )
        )
        return None
    if model.block is None:
        model.block = ComponentSpec(use=config.block)
        if not model.blocks and meta.get("blocks") and model.profile is None:
            model.blocks = [ComponentSpec.model_validate(dict(b)) for b in meta["blocks"]]
    adapter = meta.get("adapter")
    if model.adapter is None and adapter:
        model.adapter = ComponentSpec.model_validate(dict(adapter))
    elif init.strict and adapter and model.adapter is not None:
        theirs, ours = ComponentSpec.model_validate(dict(adapter)).options, model.adapter.options
        differ = [k for k in sorted(set(theirs) & set(ours)) if theirs[k] != ours[k]]
        if differ:
            problems.append(
                Problem(
                    "model.adapter",
                    "the adapter does not fit the folder's weights: "
                    + "; ".join(f"{k} is {theirs[k]!r} in {init.path}, {ours[k]!r} here" for k in differ),
                    "leave model.adapter out to use the folder's, or warm-start with init_from: {path, strict: false}",
                    source.line(("model", "adapter")),
                )
            )
    return config


def _memory_problem(config: SigerConfig) -> str | None:
    """A model whose weights, gradients and AdamW state alone exceed this machine's memory."""
    import os

    d, di, n, r, k = config.d_model, config.d_inner, config.d_state, config.dt_rank_value, config.d_conv
    per_layer = d * 2 * di + di * (k + 1) + di * (r + 2 * n) + r * di + di + di * n + di + di * d + d
    params = config.n_layers * per_layer + d
    try:
        machine = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # not every platform tells
        return None
    need = 16 * params  # fp32 weights, gradients and AdamW's two moments
    if need <= machine:
        return None
    return (
        f"a backbone of d_model {d} x n_layers {config.n_layers} has {params / 1e9:.1f}B parameters: training needs "
        f"{need / 2**30:.0f} GiB for weights, gradients and AdamW alone, this machine has {machine / 2**30:.0f} GiB"
    )


def _out_dir_problem(out_dir: Path) -> str | None:
    from sigerlm.io import SYSTEM_FOLDERS

    resolved = out_dir.expanduser().resolve()
    if any(resolved == s or resolved.is_relative_to(s) for s in SYSTEM_FOLDERS):
        return f"{out_dir} is under a system folder ({resolved}): choose a run folder of your own"
    if out_dir.exists() and not out_dir.is_dir():
        return f"{out_dir} is a file, not a folder: choose another out_dir"
    return None


def resolve(
    manifest: Manifest, source: ManifestSource, pm: SigerPluginManager, force: bool = False
) -> ResolvedManifest:
    """Find every component and validate its options; raise one error listing every problem.
    ``force``: outputs may replace folders outside the run folder (``siger run --force``)."""
    from sigerlm.model.config import ConfigError, SigerConfig

    problems: list[Problem] = []
    resolved: dict[tuple[str | int, ...], ResolvedComponent] = {}
    config: SigerConfig | None = None
    specs = manifest.component_specs()
    profile_block = False
    if manifest.model is not None and manifest.model.init_from is not None:
        config = _init_from(manifest, source, problems)
        specs = manifest.component_specs()
    elif manifest.model is not None:
        try:
            config = SigerConfig.from_profile(manifest.model.profile, **manifest.model.config)
        except ConfigError as exc:
            where = ("model", "profile") if "profile" in str(exc) else ("model", "config")
            problems.append(Problem(format_path(where), str(exc), None, source.line(where)))
        if config is not None and manifest.model.block is None:
            # the profile's block, written out so the resolved manifest names it
            manifest.model.block = ComponentSpec(use=config.block)
            specs = manifest.component_specs()
            profile_block = True
    out_dir = Path(manifest.out_dir) if manifest.out_dir else Path("runs") / manifest.name
    why = _out_dir_problem(out_dir)
    if why:
        problems.append(Problem("out_dir", why, None, source.line(("out_dir",))))
    if config is not None:
        why = _memory_problem(config)
        if why:
            where = ("model", "config") if manifest.model and manifest.model.config else ("model", "profile")
            problems.append(Problem(format_path(where), why, "choose a smaller model", source.line(where)))
    for path, kind, spec in specs:
        try:
            component = pm.get_component(kind, spec.use)
        except ComponentError as exc:
            hint = None
            if path == ("model", "block") and profile_block and config is not None:
                where = ("model", "profile")
                problems.append(
                    Problem(
                        format_path(where),
                        f"profile '{config.profile}' needs block '{spec.use}', which no loaded plugin provides",
                        f"install the plugin that provides it (pip install sigerlm-{spec.use.split(':')[-1]}) "
                        "or choose another profile",
                        source.line(where),
                    )
                )
                continue
            if manifest.plugins is not None:
                hint = f"this manifest loads only plugins: {manifest.plugins}; add the plugin that provides it"
            problems.append(Problem(format_path(path + ("use",)), str(exc), hint, source.line(path + ("use",))))
            continue
        given = spec.options
        placement = {k: given.pop(k) for k in PLACEMENT if k in given} if path[:2] == ("model", "blocks") else {}
        try:
            options = component.validate(given)
        except ValidationError as exc:
            problems.extend(pydantic_problems(exc, component.options, path, source))
            continue
        for option, ref_kind, ref in component_refs(options):
            at = path + (option,)
            try:
                ref_component = pm.get_component(ref_kind, ref.use)
                ref_component.validate(ref.options)
            except ComponentError as exc:
                problems.append(Problem(format_path(at + ("use",)), str(exc), None, source.line(at)))
            except ValidationError as exc:
                problems.extend(pydantic_problems(exc, ref_component.options, at, source))
        for option, why in output_problems(options, out_dir, force):
            where = path + (option,)
            problems.append(Problem(format_path(where), why, None, source.line(where)))
        for option, item in missing_inputs(options, out_dir):
            where = path + tuple(int(p) if p.isdigit() else p for p in re.split(r"[\[\]]+", option) if p)
            problems.append(Problem(format_path(where), f"{item}: file or folder not found", None, source.line(where)))
        resolved[path] = ResolvedComponent(path, kind, component, options, placement)
    if config is not None and manifest.model is not None and manifest.model.blocks:
        try:
            place_blocks(config.n_layers, [spec.options for spec in manifest.model.blocks])
        except ValueError as exc:
            problems.append(Problem("model.blocks", str(exc), None, source.line(("model", "blocks"))))
    if problems:
        raise ManifestError(problems, source.name)
    if config is not None:
        config.block = resolved[("model", "block")].component.qualified_name
    return ResolvedManifest(manifest, source, resolved, config)


def load_manifest(
    path: str | Path | Mapping[str, Any],
    overrides: Iterable[str] = (),
    *,
    pm: SigerPluginManager | None = None,
    force: bool = False,
) -> tuple[ResolvedManifest, SigerPluginManager]:
    """Read, validate and resolve a manifest; build the plugin manager it asks for.

    Everything that can be checked without doing work is checked here: structure, types,
    plugins, component names and component options.
    """
    from sigerlm.errors import PluginLoadError
    from sigerlm.plugins import make_plugin_manager

    if isinstance(path, Mapping):
        source = ManifestSource(json.loads(json.dumps(dict(path))))
        apply_overrides(source, overrides)
    else:
        source = read_manifest(path, overrides)
    manifest = parse_manifest(source)
    if pm is None:
        load = manifest.plugins if manifest.plugins is not None else "all"
        try:
            pm = make_plugin_manager(load, required=manifest.plugins or ())
        except PluginLoadError as exc:
            problems = []
            for line in str(exc).splitlines():
                index = next((i for i, p in enumerate(manifest.plugins or []) if f"'{p}'" in line), None)
                loc: tuple[str | int, ...] = ("plugins", index) if index is not None else ("plugins",)
                problems.append(Problem(format_path(loc), line, None, source.line(loc)))
            raise ManifestError(problems, source.name) from None
    return resolve(manifest, source, pm, force), pm
