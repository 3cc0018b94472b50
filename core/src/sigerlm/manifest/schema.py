"""The manifest's format: pydantic models for ``siger: 1`` files and their JSON schema.

```yaml
siger: 1                     # format version
name: quickstart
plugins: [text]              # load exactly these plugins (all installed ones when left out)
seed: 0
out_dir: runs/quickstart     # default: runs/<name>
model:
  profile: small             # a SigerConfig profile, then field overrides under config:
  config: {d_model: 128}
  block: {use: ssm}          # every layer's block, unless blocks: places others
  blocks: [{use: moe, every: 2}]
  adapter: {use: text, vocab_size: 4096}
  transforms: [{use: lora, rank: 8}]
data:
  train: {use: text_completion, files: [corpus.txt]}
steps:
  - {use: train, max_steps: 100}
```

Every component is written ``{use: name, ...options}`` (or just ``name``); its options are
validated against the component's own pydantic model by ``sigerlm.manifest.resolve``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

FORMAT_VERSION = 1
REF_PATTERN = r"^([a-z0-9][a-z0-9_.-]*:)?[a-z0-9][a-z0-9_.-]*$"
#: keys of a ``model.blocks`` entry that place it on layers (not options of the block)
PLACEMENT = ("every", "layers")


class _PathMark:
    """Marks an option that names a file or folder the run reads or writes."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return self.name


_INPUT_PATH, _OUTPUT_PATH = _PathMark("InputPath"), _PathMark("OutputPath")
#: An option that names a file or folder the run reads. ``resolve`` checks that it exists,
#: unless it lies in the run folder (an earlier step may write it), so a typo fails first.
InputPath = Annotated[str, _INPUT_PATH]
#: An option that names a file or folder a step writes, relative to the run folder. ``resolve``
#: refuses the run folder itself (or a folder holding it), a system folder, a file, and a folder
#: outside the run folder that already holds files (unless ``--force``): nothing outside the
#: run folder is ever replaced.
OutputPath = Annotated[str, _OUTPUT_PATH]


def _marked(annotation: Any, mark: _PathMark) -> bool:
    import typing

    if mark in getattr(annotation, "__metadata__", ()):
        return True
    return any(_marked(arg, mark) for arg in typing.get_args(annotation))


def _is_input_path(annotation: Any) -> bool:
    return _marked(annotation, _INPUT_PATH)


def output_problems(options: BaseModel, out_dir: Path, force: bool = False) -> list[tuple[str, str]]:
    """``(field, why)`` for every ``OutputPath`` option that may not be written."""
    from sigerlm.io import output_problem

    problems = []
    root = out_dir.resolve()
    for name, info in type(options).model_fields.items():
        value = getattr(options, name)
        if not _marked(info.annotation, _OUTPUT_PATH) or not isinstance(value, str):
            continue
        target = (out_dir / Path(value).expanduser()).resolve()
        if target == root or root.is_relative_to(target):
            problems.append(
                (name, f"{value} is the run folder {out_dir} (or holds it): writing there replaces the run")
            )
        elif not target.is_relative_to(root):
            why = output_problem(target, force)
            if why:
                problems.append((name, f"{value} is outside the run folder {out_dir} and {why.split(' ', 1)[1]}"))
    return problems


class ComponentKind:
    """Marks an option that is itself a component of ``kind`` (``component_ref("tokenizers")``)."""

    def __init__(self, kind: str):
        self.kind = kind

    def __repr__(self) -> str:
        return f"ComponentKind({self.kind!r})"


def component_refs(options: BaseModel) -> list[tuple[str, str, Any]]:
    """``(field, kind, spec)`` for every option that is a component (``component_ref``) and is set."""
    import typing

    def kind_of(annotation: Any) -> str | None:
        for meta in getattr(annotation, "__metadata__", ()):
            if isinstance(meta, ComponentKind):
                return meta.kind
        return next((k for k in map(kind_of, typing.get_args(annotation)) if k), None)

    refs = []
    for name, info in type(options).model_fields.items():
        kind = kind_of(info.annotation)
        value = getattr(options, name)
        if kind is not None and value is not None:
            refs.append((name, kind, value))
    return refs


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


def component_ref(kind: str) -> Any:
    """An option that names a component of ``kind``, written like any component
    (``tokenizer: {use: bpe, path: tok/}`` or ``tokenizer: tiktoken``); ``resolve`` finds it and
    validates its options, and the factory builds it with ``run.plugin_manager``."""
    return Annotated[ComponentSpec, ComponentKind(kind)]


class InitFrom(BaseModel):
    """``model.init_from`` written out: a model folder and how strictly it must fit."""

    model_config = ConfigDict(extra="forbid")

    path: str = Field(description="A model folder (config.json, model.safetensors).")
    strict: bool = Field(
        True,
        description="true: every tensor must fit (fine-tuning). false: copy the tensors whose name and shape match "
        "and keep the rest freshly initialised (warm start into a new shape: more layers, another block, a wider "
        "head); model.profile may then give the new shape.",
    )


class ModelSpec(BaseModel):
    """The model: backbone configuration, its block, the modality adapter and transforms."""

    model_config = ConfigDict(extra="forbid")

    init_from: str | InitFrom | None = Field(
        None,
        description="A model folder to start from (fine-tuning, LoRA): its backbone config, blocks, adapter and "
        "weights; model.config may still override fields that do not change shapes (dropout, ...). "
        "{path, strict: false} warm-starts a model of another shape.",
    )
    profile: str | None = Field(None, description="SigerConfig profile (tiny, small, ...).")
    config: dict[str, Any] = Field(default_factory=dict, description="SigerConfig field overrides.")
    block: ComponentSpec | None = Field(None, description="Every layer's block (default: the profile's, ssm).")
    blocks: list[ComponentSpec] = Field(
        default_factory=list,
        description="Other blocks on chosen layers: entries with every: K (layers K-1, 2K-1, ...) or layers: [i, ...] "
        "replace the default there (later entries win); or one entry per layer, without placement.",
    )
    adapter: ComponentSpec | None = Field(None, description="Modality adapter (text, ...).")
    transforms: list[ComponentSpec] = Field(default_factory=list, description="Applied in order.")

    def init_source(self) -> InitFrom | None:
        """``init_from`` as ``{path, strict}``."""
        if isinstance(self.init_from, str):
            return InitFrom(path=self.init_from)
        return self.init_from


class Manifest(BaseModel):
    """A SigerLM run."""

    model_config = ConfigDict(extra="forbid", title="SigerLM manifest")

    siger: Literal[1] = Field(description="Manifest format version.")
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", description="Run name.")
    description: str = ""
    plugins: list[str] | None = Field(
        None, description="Plugins to load (entry-point names); all installed ones when omitted."
    )
    seed: int = Field(0, ge=0, le=2**32 - 1, description="Seeds Python, NumPy and torch (0 to 2**32 - 1).")
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
            for i, spec in enumerate(self.model.blocks):
                out.append((("model", "blocks", i), "blocks", spec))
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
