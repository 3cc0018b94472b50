"""The kernel build never hangs on a lock left by a killed build, waits for a live one only so
long (then names the folder), and keys its cache by the torch version. torch's compile is
replaced by a stand-in that takes torch's own lock file exactly as ``cpp_extension`` does."""

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from sigerlm_kernels import kernels

# what torch.utils.cpp_extension._jit_compile does around a build: a lock file in the build folder
TORCH_LIKE_LOAD = """
import os, time
from torch.utils.file_baton import FileBaton

def load(name, build_directory, **kwargs):
    baton = FileBaton(os.path.join(build_directory, "lock"))
    if baton.try_acquire():
        try:
            with open(os.path.join(build_directory, "built"), "a") as f:
                f.write(name + "\\n")
            time.sleep(float(os.environ.get("FAKE_BUILD_SECONDS", "0")))
        finally:
            baton.release()
    else:
        baton.wait()  # torch waits for the lock file to go, for ever
    return ("module", name)
"""


@pytest.fixture
def fake_build(tmp_path, monkeypatch):
    """TORCH_EXTENSIONS_DIR in tmp_path and torch's compile replaced; the build folder."""
    from torch.utils import cpp_extension

    namespace: dict = {}
    exec(TORCH_LIKE_LOAD, namespace)
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    monkeypatch.setattr(cpp_extension, "load", namespace["load"])
    return kernels.build_folder()


def build_in_thread(timeout=20):
    box = {}

    def run():
        try:
            box["result"] = kernels._build()
        except Exception as exc:  # reported by the test
            box["error"] = exc

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the build still waits"
    if "error" in box:
        raise box["error"]
    return box["result"]


def test_the_build_folder_is_under_torch_extensions_dir(fake_build, tmp_path):
    assert fake_build == tmp_path / "extensions" / kernels.extension_name()


def test_a_lock_left_by_a_killed_build_is_removed_and_the_kernels_built(fake_build):
    fake_build.mkdir(parents=True)
    (fake_build / "lock").write_bytes(b"")  # torch's lock file, its owner long gone
    assert build_in_thread() == ("module", kernels.extension_name())
    assert not (fake_build / "lock").exists() and (fake_build / "built").exists()


def test_sigkill_during_the_first_build_does_not_hang_the_next_run(fake_build, tmp_path):
    script = (
        TORCH_LIKE_LOAD
        + "\nfrom torch.utils import cpp_extension\ncpp_extension.load = load\n"
        + "from sigerlm_kernels import kernels\nkernels._build()\n"
    )
    env = {**os.environ, "FAKE_BUILD_SECONDS": "600"}
    child = subprocess.Popen([sys.executable, "-c", script], env=env)
    try:
        deadline = time.monotonic() + 60
        while not (fake_build / "built").exists():  # the child is compiling, torch's lock taken
            assert child.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        assert (fake_build / "lock").exists()
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(30)
    assert (fake_build / "lock").exists()  # SIGKILL left torch's lock behind
    assert build_in_thread() == ("module", kernels.extension_name())
    assert (fake_build / "built").read_text().count("\n") == 2  # built again


def test_waiting_for_a_live_build_times_out_naming_the_folder(fake_build, monkeypatch):
    import fcntl

    fake_build.mkdir(parents=True)
    (fake_build / "lock").write_bytes(b"")
    holder = os.open(fake_build / "sigerlm.lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)  # another process is building right now
    monkeypatch.setenv("SIGER_KERNEL_BUILD_TIMEOUT", "0.5")
    try:
        with pytest.raises(kernels.KernelBuildError, match="waited 0 s for another process") as info:
            build_in_thread()
        assert str(fake_build) in str(info.value) and "SIGER_KERNEL_BUILD_TIMEOUT" in str(info.value)
        assert (fake_build / "lock").exists()  # a live build's lock is never taken away
    finally:
        os.close(holder)
    assert build_in_thread() == ("module", kernels.extension_name())


def test_the_cache_key_has_the_torch_and_python_versions_and_the_source(monkeypatch, tmp_path):
    import shutil

    import torch

    name = kernels.extension_name()
    assert name.isidentifier() and f"_py{sys.version_info[0]}{sys.version_info[1]}" in name
    monkeypatch.setattr(torch, "__version__", "9.9.9+cu999")
    other = kernels.extension_name()
    assert other != name and "torch9_9_9_cu999" in other and other.isidentifier()
    monkeypatch.undo()
    copy = tmp_path / "checkout" / "kernels.cpp"  # the same source in another checkout
    copy.parent.mkdir()
    shutil.copy(kernels.SOURCE, copy)
    monkeypatch.setattr(kernels, "SOURCE", copy)
    assert kernels.extension_name() != name


def test_a_bad_timeout_setting_is_an_error(monkeypatch):
    monkeypatch.setenv("SIGER_KERNEL_BUILD_TIMEOUT", "soon")
    with pytest.raises(kernels.KernelBuildError, match="SIGER_KERNEL_BUILD_TIMEOUT must be a number"):
        kernels.build_timeout()


@pytest.mark.slow
def test_a_real_build_killed_by_sigkill_is_rebuilt_by_the_next_run(tmp_path):
    """The issue's case end to end: SIGKILL during the first real compile, then a new process
    loads the kernels (about a minute of compiling) instead of waiting for ever."""
    env = {**os.environ, "TORCH_EXTENSIONS_DIR": str(tmp_path / "extensions"), "OMP_NUM_THREADS": "1"}
    load = "from sigerlm_kernels import kernels; kernels.load(); print('loaded')"
    folder = tmp_path / "extensions" / kernels.extension_name()
    first = subprocess.Popen([sys.executable, "-c", load], env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while not (folder / "lock").exists():  # torch took its lock: the compile runs
            assert first.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        time.sleep(1)
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # the process and its compiler
        first.wait(30)
    assert (folder / "lock").exists()
    again = subprocess.run([sys.executable, "-c", load], env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.strip() == "loaded", again.stderr[-2000:]
    assert not (folder / "lock").exists()
