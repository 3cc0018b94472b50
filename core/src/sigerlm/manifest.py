"""The manifest: one YAML or JSON file that describes a whole run.

```yaml
siger: 1                     # format version
name: quickstart
plugins: [text]              # load exactly these plugins (all installed ones when left out)
seed: 0
out_dir: runs/quickstart     # default: runs/<name>
model:
  profile: small             # a SigerConfig profile, then field overrides under config:
  config: {d_model: 128}
  block: {use: ssm}
  adapter: {use: text, tokenizer: bpe}
  transforms: [{use: lora, rank: 8}]
data:
  train: {use: text_completion, files: [corpus.txt]}
steps:
  - {use: train, max_steps: 100}
```

Every component is written ``{use: name, ...options}`` (or just ``name``) and its options are
validated against the component's own pydantic model. Validation collects *every* problem,
each with the file, the line, the path inside the file (``steps[1].lr``) and the fix, before
any work starts.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from sigerlm.errors import ComponentError, ManifestError, Problem, SigerError, closest

if TYPE_CHECKING:
    from sigerlm.model.config import SigerConfig
    from sigerlm.plugins import SigerPluginManager
    from sigerlm.registry import Component

FORMAT_VERSION = 1
REF_PATTERN = r"^([a-z0-9][a-z0-9_.-]*:)?[a-z0-9][a-z0-9_.-]*$"


class _InputPath:
    """Marks an option that names an input file or folder (see ``InputPath``)."""

    def __repr__(self) -> str:
        return "InputPath"


_INPUT_PATH = _InputPath()
#: An option that names a file or folder the run reads. ``resolve`` checks that it exists,
#: unless it lies in the run folder (an earlier step may write it), so a typo fails first.
InputPath = Annotated[str, _INPUT_PATH]


def _is_input_path(annotation: Any) -> bool:
    import typing

    if _INPUT_PATH in getattr(annotation, "__metadata__", ()):
        return True
    return any(_is_input_path(arg) for arg in typing.get_args(annotation))


def missing_inputs(options: BaseModel, out_dir: Path) -> list[tuple[str, str]]:
    """``(field, path)`` for every ``InputPath`` option that does not exist (outside ``out_dir``)."""
    missing = []
    root = out_dir.resolve()
    for name, info in type(options).model_fields.items():
        if not _is_input_path(info.annotation):
            continue
        value = getattr(options, name)
        for i, item in enumerate(value if isinstance(value, list) else [value]):
            if not isinstance(item, str):
                continue
            path = Path(item).expanduser()
            if path.exists() or path.resolve().is_relative_to(root):
                continue
            missing.append((f"{name}[{i}]" if isinstance(value, list) else name, item))
    return missing


class ComponentSpec(BaseModel):
    """``{use: name, ...options}``: a component and its options (validated by the component)."""

    model_config = ConfigDict(extra="allow", json_schema_extra={"additionalProperties": True})

    use: str = Field(
        pattern=REF_PATTERN,
        description="Component name, or plugin:name to pick one plugin's component.",
    )

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        return {"use": value} if isinstance(value, str) else value

    @property
    def options(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ModelSpec(BaseModel):
    """The model: backbone configuration, its block, the modality adapter and transforms."""

    model_config = ConfigDict(extra="forbid")

    init_from: str | None = Field(
        None,
        description="A model folder to start from (fine-tuning, LoRA): its backbone config, adapter and weights. "
        "model.config may still override fields that do not change shapes (dropout, ...).",
    )
    profile: str | None = Field(None, description="SigerConfig profile (tiny, small, ...).")
    config: dict[str, Any] = Field(default_factory=dict, description="SigerConfig field overrides.")
    block: ComponentSpec | None = Field(None, description="Backbone block (default: ssm).")
    adapter: ComponentSpec | None = Field(None, description="Modality adapter (text, ...).")
    transforms: list[ComponentSpec] = Field(default_factory=list, description="Applied in order.")


class Manifest(BaseModel):
    """A SigerLM run."""

    model_config = ConfigDict(extra="forbid", title="SigerLM manifest")

    siger: Literal[1] = Field(description="Manifest format version.")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Run name.")
    description: str = ""
    plugins: list[str] | None = Field(
        None, description="Plugins to load (entry-point names); all installed ones when omitted."
    )
    seed: int = 0
    out_dir: str | None = Field(None, description="Run folder; default runs/<name>.")
    model: ModelSpec | None = None
    data: dict[str, ComponentSpec] = Field(default_factory=dict, description="Datasets by split.")
    steps: list[ComponentSpec] = Field(min_length=1, description="Run in order.")

    def component_specs(self) -> list[tuple[tuple[str | int, ...], str, ComponentSpec]]:
        """``(path, kind, spec)`` for every component the manifest names."""
        out: list[tuple[tuple[str | int, ...], str, ComponentSpec]] = []
        if self.model is not None:
            if self.model.block is not None:
                out.append((("model", "block"), "blocks", self.model.block))
            if self.model.adapter is not None:
                out.append((("model", "adapter"), "adapters", self.model.adapter))
            for i, spec in enumerate(self.model.transforms):
                out.append((("model", "transforms", i), "transforms", spec))
        for split, spec in self.data.items():
            out.append((("data", split), "datasets", spec))
        for i, spec in enumerate(self.steps):
            out.append((("steps", i), "steps", spec))
        return out


def manifest_json_schema() -> dict[str, Any]:
    """The JSON schema of the manifest format (what ``registry/schema`` holds)."""
    schema = Manifest.model_json_schema()
    # a component may also be written as just its name
    spec = schema["$defs"].pop("ComponentSpec")
    schema["$defs"]["ComponentOptions"] = spec
    schema["$defs"]["ComponentSpec"] = {
        "anyOf": [
            {"type": "string", "pattern": spec["properties"]["use"]["pattern"]},
            {"$ref": "#/$defs/ComponentOptions"},
        ],
        "description": "A component: its name, or {use: name, ...options}.",
    }
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://sigerlm.dev/schema/manifest.schema.json"
    return schema


# -- paths ---------------------------------------------------------------------------------------
def format_path(loc: Sequence[str | int]) -> str:
    """``("steps", 1, "lr")`` -> ``steps[1].lr``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def parse_path(text: str) -> list[str | int]:
    """``steps[1].lr`` or ``steps.1.lr`` -> ``["steps", 1, "lr"]``."""
    if not re.fullmatch(r"[A-Za-z_][\w-]*(\.[\w-]+|\[\d+\])*", text):
        raise SigerError(f"--set {text}: not a key path like steps[1].lr or model.config.d_model")
    parts: list[str | int] = []
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", text):
        if token.startswith("["):
            parts.append(int(token[1:-1]))
        else:
            parts.append(int(token) if token.isdigit() else token)
    return parts


# -- loading -------------------------------------------------------------------------------------
class _LineLoader(yaml.SafeLoader):
    """A safe loader that remembers the line of every key and item."""


def _line_map(node: yaml.Node, prefix: tuple[str | int, ...], lines: dict[tuple[str | int, ...], int]) -> None:
    lines.setdefault(prefix, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            path = prefix + (key.value,)
            lines[path] = key.start_mark.line + 1
            _line_map(value, path, lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[prefix + (i,)] = item.start_mark.line + 1
            _line_map(item, prefix + (i,), lines)


@dataclass
class ManifestSource:
    """The raw data of a manifest file, with where each key came from."""

    data: dict[str, Any]
    path: Path | None = None
    lines: dict[tuple[str | int, ...], int] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return str(self.path) if self.path else "<manifest>"

    def line(self, loc: Sequence[str | int]) -> int | None:
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return None


def read_manifest(path: str | Path, overrides: Iterable[str] = ()) -> ManifestSource:
    """Read a YAML or JSON manifest file and apply ``key.path=value`` overrides."""
    path = Path(path)
    if not path.is_file():
        raise ManifestError([Problem("", "file not found" if not path.exists() else "not a file")], str(path))
    text = path.read_text(encoding="utf-8")
    lines: dict[tuple[str | int, ...], int] = {}
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            node = yaml.compose(text, Loader=_LineLoader)
            data = yaml.load(text, Loader=yaml.SafeLoader)
            if node is not None:
                _line_map(node, (), lines)
    except (yaml.YAMLError, json.JSONDecodeError) as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark else getattr(exc, "lineno", None)
        raise ManifestError([Problem("", f"cannot parse: {exc}".splitlines()[0], line=line)], str(path)) from None
    if not isinstance(data, dict):
        raise ManifestError(
            [Problem("", f"expected a mapping with siger:, name:, steps:, got {type(data).__name__}")], str(path)
        )
    source = ManifestSource(data, path, lines)
    apply_overrides(source, overrides)
    return source


def _is_component_path(parts: Sequence[str | int]) -> bool:
    """Whether a path points at a component (where ``name`` is short for ``{use: name}``)."""
    p = tuple(parts)
    return (
        (len(p) == 2 and p[0] == "steps" and isinstance(p[1], int))
        or (len(p) == 2 and p[0] == "data")
        or p in (("model", "block"), ("model", "adapter"))
        or (len(p) == 3 and p[:2] == ("model", "transforms") and isinstance(p[2], int))
    )


def apply_overrides(source: ManifestSource, overrides: Iterable[str]) -> None:
    """Apply ``--set key.path=value`` (the value is parsed as YAML: numbers, lists, ...)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SigerError(f"--set {item}: expected key.path=value")
        parts = parse_path(key.strip())
        value = yaml.safe_load(raw) if raw.strip() else ""
        target: Any = source.data
        for i, part in enumerate(parts[:-1]):
            nxt = parts[i + 1]
            if isinstance(part, int):
                if not isinstance(target, list) or part >= len(target):
                    size = len(target) if isinstance(target, list) else 0
                    raise SigerError(f"--set {item}: {format_path(parts[:i]) or 'root'} has {size} items")
                target = target[part]
            else:
                if not isinstance(target, dict):
                    raise SigerError(f"--set {item}: {format_path(parts[:i])} is not a mapping")
                if part not in target or target[part] is None:
                    target[part] = [] if isinstance(nxt, int) else {}
                target = target[part]
            if isinstance(target, str) and not isinstance(nxt, int) and _is_component_path(parts[: i + 1]):
                # a component written as just its name: setting an option expands it to {use: name}
                parent = source.data
                for p in parts[:i]:
                    parent = parent[p]
                parent[part] = target = {"use": target}
        last = parts[-1]
        if isinstance(last, int):
            if not isinstance(target, list) or last >= len(target):
                raise SigerError(f"--set {item}: {format_path(parts[:-1])} has no item {last}")
        elif not isinstance(target, dict):
            raise SigerError(f"--set {item}: {format_path(parts[:-1])} is not a mapping")
        target[last] = value
        source.overrides.append(item)


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


VARIABLE = re.compile(r"\$\{(data|out|env:[A-Za-z_][A-Za-z0-9_]*)\}")


def interpolate(source: ManifestSource) -> None:
    """Replace ``${data}`` (the data folder: ``$SIGER_DATA_DIR`` or ``../shared/data``),
    ``${out}`` (the run folder) and ``${env:NAME}`` in every string of the manifest."""
    import os

    problems: list[Problem] = []
    cache: dict[str, str] = {}

    def value(name: str, loc: tuple[str | int, ...]) -> str:
        if name not in cache:
            if name == "data":
                from sigerlm.paths import data_dir

                cache[name] = str(data_dir())
            elif name == "out":
                out = source.data.get("out_dir")
                cache[name] = str(out if isinstance(out, str) and out else Path("runs") / str(source.data.get("name")))
            else:
                var = name.removeprefix("env:")
                if var not in os.environ:
                    raise SigerError(f"environment variable {var} is not set")
                cache[name] = os.environ[var]
        return cache[name]

    def walk(node: Any, loc: tuple[str | int, ...]) -> Any:
        if isinstance(node, dict):
            return {k: walk(v, loc + (k,)) for k, v in node.items()}
        if isinstance(node, list):
            return [walk(v, loc + (i,)) for i, v in enumerate(node)]
        if not (isinstance(node, str) and "${" in node):
            return node
        try:
            if loc == ("out_dir",) and "${out}" in node:
                raise SigerError("out_dir cannot refer to ${out}")
            return VARIABLE.sub(lambda m: value(m.group(1), loc), node)
        except SigerError as exc:
            problems.append(Problem(format_path(loc), f"cannot expand {node!r}: {exc}", None, source.line(loc)))
            return node

    source.data = walk(source.data, ())
    if problems:
        raise ManifestError(problems, source.name)


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


def _init_from(manifest: Manifest, source: ManifestSource, problems: list[Problem]) -> SigerConfig | None:
    """The config of ``model.init_from``'s folder (with ``model.config`` on top); fills in the
    folder's block and adapter where the manifest names none."""
    from sigerlm.model.config import ConfigError, SigerConfig
    from sigerlm.model.folder import CheckpointError, read_config

    model = manifest.model
    assert model is not None and model.init_from is not None
    where: tuple[str | int, ...] = ("model", "init_from")
    if model.profile is not None:
        problems.append(
            Problem(
                "model.profile",
                "give either model.profile or model.init_from: the folder's config fixes the model's shape",
                None,
                source.line(("model", "profile")),
            )
        )
        return None
    try:
        saved, meta = read_config(model.init_from)
        config = SigerConfig.from_dict({**saved.to_dict(), **model.config}) if model.config else saved
    except (CheckpointError, ConfigError) as exc:
        problems.append(Problem(format_path(where), str(exc), None, source.line(where)))
        return None
    if model.block is None:
        model.block = ComponentSpec(use=config.block)
    adapter = meta.get("adapter")
    if model.adapter is None and adapter:
        model.adapter = ComponentSpec.model_validate(dict(adapter))
    return config


def resolve(manifest: Manifest, source: ManifestSource, pm: SigerPluginManager) -> ResolvedManifest:
    """Find every component and validate its options; raise one error listing every problem."""
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
        try:
            options = component.validate(spec.options)
        except ValidationError as exc:
            problems.extend(pydantic_problems(exc, component.options, path, source))
            continue
        out_dir = Path(manifest.out_dir) if manifest.out_dir else Path("runs") / manifest.name
        for option, item in missing_inputs(options, out_dir):
            where = path + tuple(int(p) if p.isdigit() else p for p in re.split(r"[\[\]]+", option) if p)
            problems.append(Problem(format_path(where), f"{item}: file or folder not found", None, source.line(where)))
        resolved[path] = ResolvedComponent(path, kind, component, options)
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
    return resolve(manifest, source, pm), pm
