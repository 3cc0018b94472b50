"""Running evaluators: the ``evaluate`` step, task files and ``siger eval``'s report.

A task file lists evaluators as a manifest's steps list components::

    name: quickstart
    evaluators:
      - {use: perplexity, files: ["${here}/id-text.jsonl"]}
      - {use: multiple-choice, name: copa-id, template: copa, files: ["${here}/copa-id.jsonl"]}

``${here}`` is the task file's folder, ``${data}`` the data folder; other relative paths are
relative to the current folder (as in manifests). Every evaluator registered by any plugin is
called the same way, ``factory(run, options)``, on ``current_model(run)``; ``siger eval`` hands
it a run-like ``EvalRun`` whose ``state["model"]`` is the loaded model folder.
"""

from __future__ import annotations

import json
import logging
import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from sigerlm.errors import SigerError

log = logging.getLogger("sigerlm.eval")
LABEL = re.compile(r"^[A-Za-z0-9_.+-]+$")


class EvalTaskError(SigerError):
    """A task file (or an ``evaluate`` step's list) that cannot run; names the file and line."""


@dataclass
class Planned:
    label: str
    component: Any
    options: Any


@dataclass
class EvalRun:
    """What an evaluator receives from ``siger eval``: the attributes of ``sigerlm.run.Run`` that
    make sense without a manifest. ``state["model"]`` is the model to evaluate."""

    plugin_manager: Any
    out_dir: Path
    state: dict[str, Any] = field(default_factory=dict)
    name: str = "eval"
    seed: int = 0
    rank: int = 0
    world_size: int = 1
    is_main: bool = True
    resume: bool = False
    logger: logging.Logger = log
    results: list[dict[str, Any]] = field(default_factory=list)
    manifest: Any = None
    resolved: Any = None

    def component(self, *path: Any) -> Any:
        raise SigerError(f"siger eval has no manifest: no component at {'.'.join(map(str, path))}")

    def dataset(self, split: str) -> Any:
        raise SigerError(f"siger eval has no manifest data splits (asked for data.{split}); give files instead")


def eval_run(plugin_manager: Any, model: Any, out_dir: Path, name: str = "eval") -> EvalRun:
    state = {"model": model}
    tokenizer = getattr(getattr(model, "adapter", None), "tokenizer", None)
    if tokenizer is not None:
        state["tokenizer"] = tokenizer
    resolved = SimpleNamespace(config=getattr(model, "config", None))
    return EvalRun(plugin_manager, Path(out_dir), state, name=name, resolved=resolved)


# -- planning -------------------------------------------------------------------------------------
def plan(
    plugin_manager: Any,
    specs: Sequence[Any],
    where: str,
    out_dir: Path,
    lines: Sequence[int | None] | None = None,
) -> list[Planned]:
    """Find and validate every evaluator before any runs; errors name ``where`` (a file) and line.
    Input files must exist unless they lie in ``out_dir`` (an earlier step may write them)."""
    from pydantic import ValidationError

    from sigerlm.errors import ComponentError
    from sigerlm.manifest.schema import missing_inputs

    planned: list[Planned] = []
    problems: list[str] = []
    seen: dict[str, int] = {}
    for i, spec in enumerate(specs):
        line = lines[i] if lines and i < len(lines) else None
        at = f"{where}:{line}: evaluators[{i}]" if line else f"{where}: evaluators[{i}]"
        if isinstance(spec, str):
            spec = {"use": spec}
        if not isinstance(spec, Mapping) or not isinstance(spec.get("use"), str):
            problems.append(f"{at}: expected {{use: EVALUATOR, ...options}}, got {spec!r}"[:300])
            continue
        options = {k: v for k, v in spec.items() if k not in ("use", "name")}
        try:
            component = plugin_manager.get_component("evaluators", spec["use"])
        except ComponentError as exc:
            problems.append(f"{at}: {exc}")
            continue
        try:
            validated = component.validate(options)
        except ValidationError as exc:
            for error in exc.errors():
                loc = ".".join(str(p) for p in error["loc"]) or "(options)"
                problems.append(f"{at} ({spec['use']}): {loc}: {error['msg']}")
            continue
        for option, path in missing_inputs(validated, Path(out_dir)):
            problems.append(f"{at} ({spec['use']}): {option}: {path}: file or folder not found")
        label = str(spec.get("name") or spec["use"])
        if not LABEL.match(label):
            problems.append(f"{at}: name {label!r} may hold only letters, digits and _ . + -")
            continue
        seen[label] = seen.get(label, 0) + 1
        if seen[label] > 1:
            label = f"{label}-{seen[label]}"
        planned.append(Planned(label, component, validated))
    if problems:
        raise EvalTaskError("\n".join(problems))
    return planned


def run_planned(run: Any, planned: Sequence[Planned], details_dir: Path | None) -> dict[str, dict[str, Any]]:
    """``{label: {metric: number}}``; per-row details go to ``details_dir/<label>.jsonl``."""
    from sigerlm.io import atomic_write

    results: dict[str, dict[str, Any]] = {}
    for item in planned:
        run.state.pop("eval_details", None)
        start = time.perf_counter()
        out = item.component.build(run, options=item.options)
        seconds = time.perf_counter() - start
        if not isinstance(out, Mapping):
            raise SigerError(f"evaluator {item.component.qualified_name} returned {type(out).__name__}, not a mapping")
        numbers = {str(k): _number(v) for k, v in out.items() if _number(v) is not None}
        numbers["seconds"] = round(seconds, 3)
        results[item.label] = numbers
        details = run.state.pop("eval_details", None)
        if details is not None and details_dir is not None and getattr(run, "is_main", True):
            details_dir.mkdir(parents=True, exist_ok=True)
            text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in details)
            atomic_write(details_dir / f"{item.label}.jsonl", text)
        log.info("%s: %s", item.label, numbers)
    return results


def _number(value: Any) -> float | int | None:
    """A finite real number (Python, numpy), else None: an evaluator's other values are not reported."""
    import numbers

    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    value = int(value) if isinstance(value, numbers.Integral) else float(value)
    return value if isinstance(value, int) or math.isfinite(value) else None


# -- the evaluate step ----------------------------------------------------------------------------
def evaluate_step(run: Any, options: Any) -> dict[str, Any]:
    where = f"manifest '{getattr(run, 'name', '?')}' evaluate step"
    out_dir = Path(run.out_dir)
    planned = plan(run.plugin_manager, options.evaluators, where, out_dir)
    results = run_planned(run, planned, out_dir / f"{options.out}.details")
    if getattr(run, "is_main", True):
        name = str(getattr(getattr(run, "model_source", None), "name", "") or getattr(run, "name", "model"))
        write_report(out_dir / options.out, {name: results}, None)
    return results


# -- task files -----------------------------------------------------------------------------------
def load_task(path: str | Path) -> tuple[str, list[Any], list[int | None]]:
    """``(name, evaluator specs, line of each)`` from a task file (``${here}``, ``${data}`` filled)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise EvalTaskError(f"{path}: task file not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise EvalTaskError(f"{at}: not valid YAML ({getattr(exc, 'problem', None) or exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("evaluators"), list) or not data["evaluators"]:
        raise EvalTaskError(f"{path}: a task file is a mapping with a non-empty list 'evaluators: [{{use: ...}}, ...]'")
    unknown = sorted(set(data) - {"name", "description", "evaluators"})
    if unknown:
        raise EvalTaskError(f"{path}: unknown keys {unknown} (allowed: name, description, evaluators)")
    lines: list[int | None] = []
    for key, value in root.value:
        if key.value == "evaluators":
            lines = [item.start_mark.line + 1 for item in value.value]
    specs = _fill(data["evaluators"], {"here": str(path.resolve().parent)}, path)
    return str(data.get("name") or path.stem), specs, lines


def _fill(node: Any, values: dict[str, str], path: Path) -> Any:
    if isinstance(node, dict):
        return {k: _fill(v, values, path) for k, v in node.items()}
    if isinstance(node, list):
        return [_fill(v, values, path) for v in node]
    if isinstance(node, str) and "${" in node:

        def sub(match: re.Match[str]) -> str:
            name = match.group(1)
            if name == "data" and "data" not in values:
                from sigerlm.paths import data_dir

                values["data"] = str(data_dir())
            if name not in values:
                raise EvalTaskError(f"{path}: unknown ${{{name}}} in {node!r} (known: ${{here}}, ${{data}})")
            return values[name]

        return re.sub(r"\$\{([^}]+)\}", sub, node)
    return node


def eval_models(
    model_dirs: Sequence[str | Path], task: str | Path, out_dir: str | Path, plugin_manager: Any = None
) -> dict[str, Any]:
    """Evaluate model folders on a task file; writes ``eval.json`` and ``eval.md`` into ``out_dir``."""
    from sigerlm.assemble import load_model

    if plugin_manager is None:
        from sigerlm.plugins import make_plugin_manager

        plugin_manager = make_plugin_manager()
    name, specs, lines = load_task(task)
    out_dir = Path(out_dir)
    planned = plan(plugin_manager, specs, str(task), out_dir, lines)
    for folder in model_dirs:
        if not (Path(folder) / "config.json").is_file():
            raise EvalTaskError(f"{folder}: not a model folder (no config.json)")
    labels = _model_labels(model_dirs)
    results: dict[str, Any] = {}
    for folder, label in zip(model_dirs, labels, strict=True):
        model = load_model(folder, plugin_manager)
        run = eval_run(plugin_manager, model, out_dir, name)
        results[label] = run_planned(run, planned, out_dir / "details" / _safe(label))
        del run, model
    report = {
        "task": str(task),
        "name": name,
        "models": {lab: str(f) for lab, f in zip(labels, model_dirs, strict=True)},
    }
    write_report(out_dir / "eval", results, report)
    return {**report, "results": results}


def _model_labels(model_dirs: Sequence[str | Path]) -> list[str]:
    """Short, distinct labels: the folder path as given, unless two are the same."""
    labels = [str(Path(f)) for f in model_dirs]
    if len(set(labels)) < len(labels):
        labels = [f"{lab}#{i + 1}" for i, lab in enumerate(labels)]
    return labels


def _safe(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", label).strip("_") or "model"


# -- reports --------------------------------------------------------------------------------------
def rows_of(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[tuple[str, str]]:
    """``(evaluator label, metric)`` in first-seen order over all models."""
    rows: list[tuple[str, str]] = []
    for per_model in results.values():
        for label, metrics in per_model.items():
            for metric in metrics:
                if (label, metric) not in rows:
                    rows.append((label, metric))
    return rows


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return str(value)
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.0f}"


def markdown(results: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    models = list(results)
    lines = ["| evaluator | metric | " + " | ".join(models) + " |", "|---|---|" + "---:|" * len(models)]
    for label, metric in rows_of(results):
        values = [fmt(results[m].get(label, {}).get(metric)) for m in models]
        lines.append(f"| {label} | {metric} | " + " | ".join(values) + " |")
    return "\n".join(lines) + "\n"


def rich_table(results: Mapping[str, Mapping[str, Mapping[str, Any]]], title: str = "") -> Any:
    from rich.table import Table

    table = Table(title=title or None)
    table.add_column("evaluator")
    table.add_column("metric")
    for model in results:
        table.add_column(model, justify="right")
    previous = None
    for label, metric in rows_of(results):
        values = [fmt(results[m].get(label, {}).get(metric)) for m in results]
        table.add_row(label if label != previous else "", metric, *values)
        previous = label
    return table


def write_report(stem: Path, results: Mapping[str, Any], meta: Mapping[str, Any] | None) -> None:
    """``<stem>.json`` (meta and every number) and ``<stem>.md`` (the side-by-side table)."""
    from sigerlm.io import atomic_write

    stem.parent.mkdir(parents=True, exist_ok=True)
    data = {**(meta or {}), "results": results}
    atomic_write(stem.with_suffix(".json"), json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    title = f"# {meta['name']}\n\n" if meta and meta.get("name") else ""
    atomic_write(stem.with_suffix(".md"), title + markdown(results))
