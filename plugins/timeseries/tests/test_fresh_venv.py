"""The third-party proof: a fresh virtual environment holding only core, its compiled kernels
(sigerlm-kernels, the default scan back-end) and this plugin (and its test extra) runs the
plugin's tests, ``siger plugins`` lists it, and ``siger run`` trains, evaluates and saves a
classifier that ``siger timeseries stream`` then streams. No sigerlm-text.

Nothing heavy is downloaded: the fresh environment sees the third-party packages of the
environment running the tests (torch, numpy, aeon, ...) through a ``.pth`` file that points at
a folder of links to them, leaving out every SigerLM distribution; only the build backend
(hatchling) comes from the package index. SigerLM packages are installed with ``--no-index``,
so their declared dependencies must already be satisfied.
"""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PLUGIN = ROOT / "plugins" / "timeseries"
SIGER = ("sigerlm", "_sigerlm", "_editable_impl_", "__editable__", "siger_hello")


def sh(args, **kwargs):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGER_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(kwargs.pop("env", {}))
    out = subprocess.run(
        [str(a) for a in args], check=False, env=env, capture_output=True, text=True, timeout=900, **kwargs
    )
    assert out.returncode == 0, f"{args} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


@pytest.mark.slow
def test_core_and_timeseries_alone_in_a_fresh_venv(tmp_path):
    venv = tmp_path / "venv"
    sh([sys.executable, "-m", "venv", venv])
    python, siger = venv / "bin" / "python", venv / "bin" / "siger"
    deps = tmp_path / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(SIGER) and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)
    purelib = sh([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    (Path(purelib) / "third_party.pth").write_text(f"{deps}\n")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    sh(pip + ["hatchling", "editables", "setuptools>=77.0.3"])
    offline = pip + ["--no-index", "--no-build-isolation"]
    sh(offline + ["--no-deps", ROOT / "core", ROOT / "testkit", ROOT / "plugins" / "kernels"])
    sh(offline + [f"{PLUGIN}[test]"])  # a regular install; its dependencies resolve with no index

    where = sh([python, "-c", "import sigerlm_timeseries; print(sigerlm_timeseries.__file__)"]).strip()
    assert Path(where).is_relative_to(venv)
    plugins = {r["name"]: r for r in json.loads(sh([siger, "plugins", "--json"]))}
    assert set(plugins) == {"core", "kernels", "timeseries"}
    assert plugins["timeseries"]["components"]["adapters"] == ["series"]

    manifest = ROOT / "registry" / "manifests" / "timeseries-classify.yaml"
    overrides = [a for o in ["steps[0].max_steps=5", "steps[0].plot=false"] for a in ("--set", o)]
    env = {"SIGER_CACHE_DIR": str(tmp_path / "cache")}
    sh([siger, "run", manifest, "--out-dir", tmp_path / "run", *overrides], env=env, cwd=tmp_path)
    scores = json.loads((tmp_path / "run" / "metrics.json").read_text())["steps"][1]["results"]
    assert 0 <= scores["accuracy"] <= 1 and "prefix_accuracy_10" in scores
    data = sh([python, "-c", "from sigerlm_timeseries.data import ts_path; print(ts_path('GunPoint', None, 'test'))"])
    out = sh([siger, "timeseries", "stream", tmp_path / "run" / "model", data.strip(), "--json"], env=env)
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 150 // 5 and set(rows[-1]["probabilities"]) == {"1", "2"}  # one row per patch of 5

    # the plugin's own tests (but this one) pass in that environment
    tests = sh(
        [
            python,
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "-m",
            "not slow",
            "--rootdir",
            PLUGIN,
            PLUGIN / "tests",
        ],
        cwd=tmp_path,
        env=env,
    )
    assert " passed" in tests and "failed" not in tests
