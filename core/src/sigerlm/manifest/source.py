"""Reading a manifest file: YAML or JSON with the line of every key, ``--set`` overrides and
``${data}``, ``${out}``, ``${env:NAME}`` variables."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from sigerlm.errors import ManifestError, Problem, SigerError


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
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ManifestError(
            [Problem("", f"not UTF-8 text (byte {exc.start}): save the manifest as UTF-8")], str(path)
        ) from None
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
        or (len(p) == 3 and p[:2] in (("model", "transforms"), ("model", "blocks")) and isinstance(p[2], int))
    )


def apply_overrides(source: ManifestSource, overrides: Iterable[str]) -> None:
    """Apply ``--set key.path=value`` (the value is parsed as YAML: numbers, lists, ...)."""
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise SigerError(f"--set {item}: expected key.path=value")
        parts = parse_path(key.strip())
        try:
            value = yaml.safe_load(raw) if raw.strip() else ""
        except yaml.YAMLError as exc:
            raise SigerError(f"--set {item}: the value is not valid YAML ({str(exc).splitlines()[0]})") from None
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
