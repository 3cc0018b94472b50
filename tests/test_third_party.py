"""A third-party plugin installed from its folder into a fresh virtual environment, next to
core (not through the repository's paths), is discovered and used by ``siger run``.

The fresh environment gets core's light dependencies from the package index, and no torch:
the example plugin needs none, which also shows that core runs torch-free components
without it.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "docs" / "plugins" / "siger-hello"


def sh(args, **kwargs):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGER_", "PYTHON", "VIRTUAL_ENV"))}
    out = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=900, **kwargs)
    assert out.returncode == 0, f"{args} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.mark.slow
def test_example_plugin_in_a_fresh_venv(tmp_path):
    venv = tmp_path / "venv"
    sh([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    core_deps = tomllib.loads((ROOT / "core" / "pyproject.toml").read_text())["project"]["dependencies"]
    light = [d for d in core_deps if re.split(r"[<>=!~ ]", d)[0] not in {"torch", "numpy"}]
    sh(pip + light + ["pytest"])
    # regular (non-editable) installs, built from the folders
    sh(pip + ["--no-deps", ROOT / "core", ROOT / "testkit", HELLO])

    where = sh([python, "-c", "import sigerlm, siger_hello; print(sigerlm.__file__); print(siger_hello.__file__)"])
    for path in where.split():
        assert Path(path).is_relative_to(venv), f"{path} is not installed in the fresh venv"

    plugins = {r["name"]: r for r in json.loads(sh([venv / "bin" / "siger", "plugins", "--json"]))}
    assert set(plugins) == {"core", "hello"}
    assert plugins["hello"]["distribution"] == "siger-hello"
    assert plugins["hello"]["components"] == {"datasets": ["lines"], "steps": ["hello"]}

    names = tmp_path / "names.txt"
    names.write_text("Ani\nBudi\n")
    manifest = tmp_path / "hello.yaml"
    manifest.write_text(
        "siger: 1\nname: hello\nplugins: [hello]\n"
        f"data:\n  train: {{use: lines, path: '{names}'}}\n"
        "steps:\n  - {use: hello, who: Lampung}\n"
    )
    out = sh([venv / "bin" / "siger", "run", manifest, "--out-dir", tmp_path / "run"])
    assert "step 0 hello:hello: lines=3" in out
    assert (tmp_path / "run" / "hello.txt").read_text() == "Hello, Lampung!\nread: Ani\nread: Budi\n"
    assert "siger-hello is loaded for run hello" in (tmp_path / "run" / "run.log").read_text()
    assert sh([venv / "bin" / "siger", "hello", "greet", "Nyo"]).strip() == "Hello, Nyo!"

    # the plugin's own tests pass in its environment
    tests = sh(
        [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", HELLO, HELLO / "tests"], cwd=tmp_path
    )
    assert "1 passed" in tests
