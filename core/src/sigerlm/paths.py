"""Where data is found. Nothing is ever downloaded: data comes from files the user points at."""

from __future__ import annotations

import os
from pathlib import Path

from sigerlm.errors import SigerError


def data_dir(explicit: str | Path | None = None) -> Path:
    """The data folder: ``explicit``, else ``$SIGER_DATA_DIR``, else ``../shared/data`` next to
    the current folder or next to the source checkout. Raises a clear error when none exists."""
    tried: list[str] = []
    candidates: list[Path] = []
    if explicit is not None:
        candidates.append(Path(explicit))
    elif os.environ.get("SIGER_DATA_DIR"):
        candidates.append(Path(os.environ["SIGER_DATA_DIR"]))
    else:
        candidates.append(Path.cwd().parent / "shared" / "data")
        checkout = Path(__file__).resolve().parents[3]  # core/src/sigerlm/paths.py -> repository root
        candidates.append(checkout.parent / "shared" / "data")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
        tried.append(str(candidate))
    raise SigerError(f"data folder not found (tried {', '.join(tried)}); point at it with --data-dir or SIGER_DATA_DIR")
