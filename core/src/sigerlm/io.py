"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], Any] | bytes | str) -> Path:
    """Write ``path`` through a temporary file in the same folder, fsync it, then rename it.

    ``write`` is the content (bytes or text) or a function that writes to a binary file.
    A crash at any moment leaves either the previous file or the complete new one.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            if callable(write):
                write(handle)
            else:
                handle.write(write.encode("utf-8") if isinstance(write, str) else write)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise
    _fsync_dir(path.parent)
    return path


#: folders no output ever goes into
SYSTEM_FOLDERS = (Path("/dev"), Path("/proc"), Path("/sys"))


def output_problem(path: str | Path, force: bool = False) -> str | None:
    """Why ``path`` may not be written as an output folder, or None: a path under a system
    folder, or a file, never; a folder that already holds files only with ``force``."""
    path = Path(path).expanduser()
    resolved = path.resolve()
    if any(resolved == s or resolved.is_relative_to(s) for s in SYSTEM_FOLDERS):
        return f"{path} is under a system folder ({resolved})"
    if path.exists() and not path.is_dir():
        return f"{path} is an existing file: siger never replaces it; choose another path"
    if path.is_dir() and not force and any(path.iterdir()):
        return f"{path} already holds files: siger never replaces them; choose an empty or new folder, or add --force"
    return None


def check_output(path: str | Path, force: bool = False, what: str = "--out") -> Path:
    """``path`` if it may be written as an output folder; else a ``SigerError`` naming why."""
    from sigerlm.errors import SigerError

    problem = output_problem(path, force)
    if problem:
        raise SigerError(f"{what}: {problem}")
    return Path(path)


def atomic_write_json(path: str | Path, data: Any) -> Path:
    return atomic_write(path, json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not possible on every platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_directory(path: str | Path):
    """Yield a temporary folder beside ``path``; on success it replaces ``path`` whole.

    A crash leaves the previous folder (or, in the instant between two renames, the new one
    complete under a temporary name beside it); never a half-written ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        for child in tmp.iterdir():
            if child.is_file():
                with open(child, "rb") as handle:
                    os.fsync(handle.fileno())
        old = None
        if path.exists():
            old = path.with_name(f".{path.name}.old-{os.getpid()}")
            os.replace(path, old)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def read_jsonl(path: str | Path) -> Iterator[tuple[int, Any, str | None]]:
    """``(line number, row, None)`` for each JSON line of a file, or ``(line number, None,
    reason)`` for a line that is not valid JSON. Blank lines are skipped. Streams the file."""
    with Path(path).open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line), None
            except json.JSONDecodeError as exc:
                yield number, None, f"not valid JSON ({exc.msg})"
