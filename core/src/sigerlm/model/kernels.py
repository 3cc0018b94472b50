"""SigerLM's compiled CPU kernels (``csrc/kernels.cpp``): the fused selective scan and the
in-place softmax cross-entropy.

They are compiled on first use with the machine's C++ compiler and cached by torch (in
``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``), for this CPU's
instruction set: about a minute once, then a fraction of a second. Nothing is downloaded.
Code that uses them is chosen explicitly (``scan: fused``); when they cannot be built the
error says how to fix it or which pure-PyTorch back-end to choose instead.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path
from typing import Any

from sigerlm.errors import SigerError

log = logging.getLogger("sigerlm.model")
SOURCE = Path(__file__).with_name("csrc") / "kernels.cpp"

_module: Any = None
_lock = threading.Lock()


class KernelBuildError(SigerError):
    """The compiled kernels cannot be built here; the message says what to install or choose."""


def _cpu_tag() -> str:
    """A tag of this CPU's features: the kernels are compiled for the machine they run on."""
    try:
        flags = next(line for line in Path("/proc/cpuinfo").read_text().splitlines() if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = os.uname().machine
    return hashlib.sha1(flags.encode()).hexdigest()[:8]


def load() -> Any:
    """Compile (once per machine and source version) and load the kernels."""
    global _module
    if _module is not None:
        return _module
    with _lock:
        if _module is None:
            _module = _build()
    return _module


def _build() -> Any:
    digest = hashlib.sha1(SOURCE.read_bytes()).hexdigest()[:8]
    name = f"sigerlm_kernels_{digest}_{_cpu_tag()}"
    try:
        from torch.utils import cpp_extension

        log.info("loading SigerLM's CPU kernels %s (compiled on first use, about a minute)", name)
        return cpp_extension.load(
            name=name,
            sources=[str(SOURCE)],
            # -ffast-math for the compile only (vectorised exp through glibc's libmvec); it is not
            # passed to the link, so it does not change floating-point modes for the process
            extra_cflags=["-O3", "-march=native", "-ffast-math", "-fopenmp", "-std=c++17"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as exc:  # a missing compiler or ninja, a failed build
        lines = str(exc).strip().splitlines()
        errors = [line.strip() for line in lines if "error" in line.lower() and "Error building" not in line]
        detail = (errors or lines or [""])[0]
        raise KernelBuildError(
            "SigerLM's CPU kernels need a C++ compiler (g++) and the ninja package, and building them failed: "
            f"{type(exc).__name__}: {detail}. Install g++ (apt-get install g++) and ninja "
            "(pip install ninja), or choose the pure-PyTorch back-ends (scan: chunked)"
        ) from exc
