"""SigerLM's compiled CPU kernels (``csrc/kernels.cpp``): the fused selective scan and the
in-place softmax cross-entropy.

They are compiled on first use with the machine's C++ compiler and cached by torch (in
``$TORCH_EXTENSIONS_DIR``, by default ``~/.cache/torch_extensions``), for this CPU's
instruction set, this torch, this Python and this copy of the source: about a minute once, then a fraction of a second.
Nothing is downloaded. Code that uses them is chosen explicitly (``scan: fused``); when they
cannot be built the error says how to fix it or which pure-PyTorch back-end to choose instead.
``siger kernels build`` builds them ahead of first use (an image, a deploy step).

Processes that build at once take turns through a lock on ``sigerlm.lock`` in the build folder,
which the operating system releases when its owner dies. A process that holds it may therefore
remove torch's own ``lock`` file: one left there was left by a build that was killed (torch
would wait for it forever). Waiting for a live build ends after ``SIGER_KERNEL_BUILD_TIMEOUT``
seconds (default 900) with an error naming the folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sigerlm.errors import SigerError

log = logging.getLogger("sigerlm.kernels")
SOURCE = Path(__file__).with_name("csrc") / "kernels.cpp"
DEFAULT_BUILD_TIMEOUT_S = 900.0
#: rows up to which linear_rows / block_step beat torch's matmul (AMD EPYC, 1 thread: 1.7 vs 2.9 ms at 1 row)
ROW_KERNEL_ROWS = 16

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


def extension_name() -> str:
    """The cache key: the source (its text and where it lies), the CPU, the torch version and
    the Python version. Installs with different torch versions, or two checkouts (torch's build
    file names the source's path, so they would rebuild in turn), keep kernels of their own."""
    import torch

    digest = hashlib.sha1(SOURCE.read_bytes() + str(SOURCE.resolve()).encode()).hexdigest()[:8]
    torch_tag = "".join(ch if ch.isalnum() else "_" for ch in torch.__version__)
    return f"sigerlm_kernels_{digest}_{_cpu_tag()}_torch{torch_tag}_py{sys.version_info[0]}{sys.version_info[1]}"


def build_folder(name: str | None = None) -> Path:
    """Where the kernels are built and cached: ``$TORCH_EXTENSIONS_DIR`` (or torch's default
    root) / the extension's name."""
    from torch.utils import cpp_extension

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or cpp_extension.get_default_build_root()
    return Path(root) / (name or extension_name())


def build_timeout() -> float:
    raw = os.environ.get("SIGER_KERNEL_BUILD_TIMEOUT")
    if raw is None:
        return DEFAULT_BUILD_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        raise KernelBuildError(f"SIGER_KERNEL_BUILD_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise KernelBuildError(f"SIGER_KERNEL_BUILD_TIMEOUT must be positive, got {raw!r}")
    return value


@contextlib.contextmanager
def build_lock(folder: Path, timeout: float) -> Iterator[None]:
    """Hold ``folder/sigerlm.lock`` (an ``flock``: released by the OS if this process dies).
    While it is held no other SigerLM process builds here, so torch's ``lock`` file, if
    present, is stale and is removed. Waiting longer than ``timeout`` raises."""
    try:
        import fcntl
    except ImportError:  # not POSIX: torch's own lock only
        yield
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / "sigerlm.lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise KernelBuildError(
            f"cannot use the kernel build folder {folder}: {exc.strerror or exc}; "
            "set TORCH_EXTENSIONS_DIR to a writable folder"
        ) from None
    try:
        deadline, told = time.monotonic() + timeout, False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise KernelBuildError(
                        f"waited {timeout:.0f} s for another process building SigerLM's CPU kernels in {folder}; "
                        "if no other siger process is running, delete that folder and try again "
                        "(SIGER_KERNEL_BUILD_TIMEOUT sets the wait)"
                    ) from None
                if not told:
                    log.info("another process is building SigerLM's CPU kernels in %s; waiting for it", folder)
                    told = True
                time.sleep(0.2)
        stale = folder / "lock"
        if stale.exists():
            log.warning("removing %s, left by a kernel build that was killed; building again", stale)
            stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)  # releases the flock


def loaded() -> Any:
    """The kernels if something has loaded them already (a fused back-end), else None: never compiles."""
    return _module


def load() -> Any:
    """Compile (once per machine, source, torch and Python version) and load the kernels."""
    global _module
    if _module is not None:
        return _module
    with _lock:
        if _module is None:
            module = _build()
            if hasattr(module, "build_info"):
                log.info("SigerLM's CPU kernels: -O3 -march=native, vectorised for %s", module.build_info())
            _module = module
    return _module


def _build() -> Any:
    name = extension_name()
    folder = build_folder(name)
    timeout = build_timeout()
    try:
        from torch.utils import cpp_extension

        log.info("loading SigerLM's CPU kernels %s (compiled on first use, about a minute)", name)
        with build_lock(folder, timeout):
            return cpp_extension.load(
                name=name,
                sources=[str(SOURCE)],
                # -ffast-math for the compile only (vectorised exp through glibc's libmvec); it is not
                # passed to the link, so it does not change floating-point modes for the process
                extra_cflags=["-O3", "-march=native", "-ffast-math", "-fopenmp", "-std=c++17"],
                extra_ldflags=["-fopenmp"],
                build_directory=str(folder),
                verbose=False,
            )
    except KernelBuildError:
        raise
    except Exception as exc:  # a missing compiler or ninja, a failed build
        lines = str(exc).strip().splitlines()
        errors = [line.strip() for line in lines if "error" in line.lower() and "Error building" not in line]
        detail = (errors or lines or [""])[0]
        raise KernelBuildError(
            "SigerLM's CPU kernels need a C++ compiler (g++) and the ninja package, and building them failed "
            f"in {folder}: {type(exc).__name__}: {detail}. Install g++ (apt-get install g++) and ninja "
            "(pip install ninja), or choose the pure-PyTorch back-ends (scan: chunked)"
        ) from exc
