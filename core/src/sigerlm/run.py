"""Running a manifest: the run folder, its records, and the steps in order.

A run folder holds:

- ``run.json``: status (running, failed, finished), the manifest digest, completed steps;
- ``manifest.resolved.yaml``: the manifest as run (qualified components, every option);
- ``plugins.json``: every loaded plugin with its distribution and version;
- ``metrics.json``: each finished step's results and seconds;
- ``run.log``: the log.

A finished run is never overwritten without ``force``; an unfinished one is continued with
``resume`` (completed steps are skipped, and each step continues its own work) only when the
resolved manifest is unchanged. Only rank 0 writes when several processes share a run.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import yaml

from sigerlm.errors import RunFolderError, SigerError
from sigerlm.io import atomic_write, atomic_write_json
from sigerlm.manifest import ResolvedComponent, ResolvedManifest
from sigerlm.plugins import SigerPluginManager

RUN_FILE = "run.json"
RUN_FORMAT = 1
log = logging.getLogger("sigerlm.run")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class Run:
    """What steps and lifecycle hooks receive."""

    resolved: ResolvedManifest
    out_dir: Path
    plugin_manager: SigerPluginManager
    resume: bool = False
    state: dict[str, Any] = field(default_factory=dict)
    results: list[dict[str, Any]] = field(default_factory=list)
    logger: logging.Logger = log

    @property
    def manifest(self):
        return self.resolved.manifest

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def seed(self) -> int:
        return self.manifest.seed

    @property
    def rank(self) -> int:
        return int(os.environ.get("RANK", "0"))

    @property
    def world_size(self) -> int:
        return int(os.environ.get("WORLD_SIZE", "1"))

    @property
    def is_main(self) -> bool:
        """True in the process that writes files (rank 0)."""
        return self.rank == 0

    def component(self, *path: str | int) -> ResolvedComponent:
        """The resolved component at a manifest path, e.g. ``run.component("data", "train")``."""
        try:
            return self.resolved.component(*path)
        except KeyError:
            where = ".".join(str(p) for p in path)
            raise SigerError(f"manifest '{self.name}' has no component at {where}") from None

    def dataset(self, split: str) -> Any:
        """Build the dataset of a split named under ``data:``."""
        if split not in self.manifest.data:
            have = ", ".join(self.manifest.data) or "none"
            raise SigerError(f"manifest '{self.name}' has no data.{split} (splits: {have})")
        return self.component("data", split).build(self)


@dataclass
class RunResult:
    out_dir: Path
    status: str
    results: dict[str, Any]


def default_out_dir(resolved: ResolvedManifest) -> Path:
    manifest = resolved.manifest
    return Path(manifest.out_dir) if manifest.out_dir else Path("runs") / manifest.name


def read_run_record(out_dir: Path) -> dict[str, Any] | None:
    path = out_dir / RUN_FILE
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunFolderError(f"{path} is unreadable ({exc}); move the folder away or use another out_dir") from None


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for key, value in data.items():
            out.update(_flat(value, f"{prefix}.{key}" if prefix else str(key)))
        return out
    if isinstance(data, list):
        out = {}
        for i, value in enumerate(data):
            out.update(_flat(value, f"{prefix}[{i}]"))
        return out
    return {prefix: data}


def manifest_changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Human-readable differences between two resolved manifests (``steps[0].lr: 0.1 -> 0.2``)."""
    a, b = _flat(old), _flat(new)
    return [
        f"{k}: {a.get(k, '<absent>')!r} -> {b.get(k, '<absent>')!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]


@contextlib.contextmanager
def _folder_lock(out_dir: Path) -> Iterator[None]:
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderError(f"another siger run is using {out_dir}") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _check_folder(out_dir: Path, resolved: ResolvedManifest, resume: bool, force: bool) -> dict[str, Any] | None:
    """Decide what may happen to an existing run folder; returns the record to continue."""
    record = read_run_record(out_dir)
    if record is None:
        if out_dir.exists() and any(p.name != ".lock" for p in out_dir.iterdir()):
            raise RunFolderError(
                f"{out_dir} is not empty and holds no SigerLM run ({RUN_FILE} is missing); "
                "choose another out_dir (--set out_dir=PATH)"
            )
        if resume:
            log.warning("nothing to resume in %s: starting a new run", out_dir)
        return None
    status = record.get("status")
    if force:
        return None
    if not resume:
        if status == "finished":
            raise RunFolderError(f"{out_dir} holds a finished run; use --force to overwrite it")
        raise RunFolderError(
            f"{out_dir} holds an unfinished run (status {status}); continue it with --resume or start over with --force"
        )
    if record.get("manifest_sha256") != resolved.digest():
        old_path = out_dir / "manifest.resolved.yaml"
        old = yaml.safe_load(old_path.read_text(encoding="utf-8")) if old_path.exists() else {}
        new = resolved.to_dict()
        old.pop("out_dir", None)
        new.pop("out_dir", None)
        changes = manifest_changes(old, new)[:10]
        raise RunFolderError(
            f"cannot resume {out_dir}: the manifest changed since the run started ("
            + "; ".join(changes)
            + "); run it in a new out_dir or use --force to start over"
        )
    return record


def execute(
    resolved: ResolvedManifest,
    pm: SigerPluginManager,
    *,
    out_dir: str | Path | None = None,
    resume: bool = False,
    force: bool = False,
) -> RunResult:
    """Run every step of a resolved manifest in its run folder."""
    out = Path(out_dir) if out_dir is not None else default_out_dir(resolved)
    run = Run(resolved, out, pm, resume=resume)
    main = run.is_main
    with _folder_lock(out) if main else contextlib.nullcontext():
        # rank 0 decides what may happen to the folder; the other ranks only read what it holds
        previous = _check_folder(out, resolved, resume, force) if main else (read_run_record(out) if resume else None)
        if previous is not None and previous.get("status") == "finished":
            log.info("run %s in %s is already finished", run.name, out)
            metrics = read_json(out / "metrics.json") or {"steps": []}
            return RunResult(out, "finished", metrics)
        if previous is None and main and force:
            _clear(out)
        run.resume = previous is not None
        completed = set(previous.get("completed_steps", [])) if previous else set()
        if previous:
            run.results = list((read_json(out / "metrics.json") or {}).get("steps", []))
        record = {
            "siger_run": RUN_FORMAT,
            "name": run.name,
            "status": "running",
            "manifest_sha256": resolved.digest(),
            "started_at": previous.get("started_at") if previous else _now(),
            "resumed_at": _now() if previous else None,
            "completed_steps": sorted(completed),
            "overrides": resolved.source.overrides,
        }
        handler = _attach_log(out) if main else None
        try:
            if main:
                atomic_write(out / "manifest.resolved.yaml", yaml.safe_dump(resolved.to_dict(), sort_keys=False))
                atomic_write_json(out / "plugins.json", [r.to_dict() for r in pm.plugin_records()])
                atomic_write_json(out / RUN_FILE, record)
            random.seed(run.seed)
            log.info(
                "run %s: %d steps, out_dir %s%s",
                run.name,
                len(run.manifest.steps),
                out,
                " (resumed)" if previous else "",
            )
            pm.hook.prepare_run(run=run)
            for index in range(len(run.manifest.steps)):
                step = resolved.component("steps", index)
                if index in completed:
                    log.info("step %d (%s) already done: skipped", index, step.component.qualified_name)
                    continue
                log.info("step %d: %s", index, step.component.qualified_name)
                started = time.perf_counter()
                output = step.build(run)
                entry = {
                    "index": index,
                    "use": step.component.qualified_name,
                    "seconds": round(time.perf_counter() - started, 3),
                    "results": dict(output) if output else {},
                }
                run.results = [r for r in run.results if r.get("index") != index] + [entry]
                completed.add(index)
                record["completed_steps"] = sorted(completed)
                if main:
                    atomic_write_json(out / "metrics.json", {"name": run.name, "steps": run.results})
                    atomic_write_json(out / RUN_FILE, record)
            results = {"name": run.name, "steps": run.results}
            pm.hook.run_finished(run=run, results=results)
            record.update(status="finished", finished_at=_now())
            if main:
                atomic_write_json(out / "metrics.json", results)
                atomic_write_json(out / RUN_FILE, record)
            log.info("run %s finished: %s", run.name, out)
            return RunResult(out, "finished", results)
        except BaseException as exc:
            record.update(status="failed", error=f"{type(exc).__name__}: {exc}", failed_at=_now())
            if main:
                atomic_write_json(out / RUN_FILE, record)
            log.error("run %s failed: %s", run.name, record["error"])
            raise
        finally:
            if handler is not None:
                logging.getLogger("sigerlm").removeHandler(handler)
                handler.close()


def read_json(path: Path) -> Any:
    if not path.exists():
        return None
    return json.loads(path.read_text(encoding="utf-8"))


def _clear(out_dir: Path) -> None:
    for child in out_dir.iterdir():
        if child.name == ".lock":
            continue
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _attach_log(out_dir: Path) -> logging.Handler:
    handler = logging.FileHandler(out_dir / "run.log", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("sigerlm")
    root.addHandler(handler)
    if root.level == logging.NOTSET or root.level > logging.INFO:
        root.setLevel(logging.INFO)
    return handler
