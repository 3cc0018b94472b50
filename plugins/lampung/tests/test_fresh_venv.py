"""``pip install -e plugins/lampung`` into a fresh virtual environment that holds only core, its
kernels (sigerlm-kernels, which text depends on) and text, then ``siger lampung translate``: the
plugin's declared dependencies are enough, and it loads without sigerlm-serving.

Nothing heavy is downloaded: the fresh environment sees the third-party packages of the
environment running the tests (torch, rapidfuzz, sacrebleu, ...) through a ``.pth`` file that
points at a folder of links to them, leaving out every SigerLM distribution; only the build
backend (hatchling) comes from the package index. The SigerLM packages are installed with
``--no-index``, so their dependencies must already be satisfied.
"""

import json
import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SIGER = ("sigerlm", "_sigerlm", "_editable_impl_", "__editable__", "siger_hello")


def sh(args, **kwargs):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SIGER_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(kwargs.pop("env", {}))
    out = subprocess.run(
        [str(a) for a in args], check=False, env=env, capture_output=True, text=True, timeout=600, **kwargs
    )
    assert out.returncode == 0, f"{args} failed:\n{out.stdout}\n{out.stderr}"
    return out.stdout


@pytest.mark.slow
def test_lampung_in_a_fresh_venv_with_core_and_text(tmp_path):
    from sigerlm.paths import data_dir

    venv = tmp_path / "venv"
    sh([sys.executable, "-m", "venv", venv])
    python = venv / "bin" / "python"
    # third-party packages of this environment, without any SigerLM distribution
    deps = tmp_path / "deps"
    deps.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
        if not entry.name.lower().startswith(SIGER) and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)
    purelib = sh([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"]).strip()
    (Path(purelib) / "third_party.pth").write_text(f"{deps}\n")
    pip = [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    # light packages from the index: the build backend (for --no-build-isolation below) and the
    # setuptools torch asks for (the venv ships an older one ahead of the linked folder)
    sh(pip + ["hatchling", "editables", "setuptools>=77.0.3"])
    offline = pip + ["--no-index", "--no-build-isolation"]
    sh(offline + ["--no-deps", "-e", ROOT / "core", "-e", ROOT / "testkit", "-e", ROOT / "plugins" / "kernels"])
    sh(offline + ["--no-deps", "-e", ROOT / "plugins" / "text"])
    sh(offline + ["-e", ROOT / "plugins" / "lampung"])  # its own dependencies resolve, with no index

    plugins = {r["name"]: r for r in json.loads(sh([venv / "bin" / "siger", "plugins", "--json"]))}
    assert set(plugins) == {"core", "kernels", "text", "lampung"}
    assert plugins["lampung"]["components"] == {"datasets": ["lampung-parallel"], "evaluators": ["lampung-translation"]}

    env = {"SIGER_DATA_DIR": str(data_dir()), "SIGER_CACHE_DIR": str(tmp_path / "cache")}
    out = sh(
        [venv / "bin" / "siger", "lampung", "translate", "--from", "abl", "--to", "ind", "--json"],
        input="Nyak haga mengan punyeu\nsanak ino mak sihat\n",
        env=env,
        cwd=tmp_path,
    )
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["stage"] for r in rows] == ["exact", "learned"]
    assert rows[1]["text"] == "anak itu tidak sehat"
    out = sh(
        [venv / "bin" / "siger", "lampung", "translate", "--from", "ind", "--to", "abl", "rumah itu tidak bagus"],
        env=env,
        cwd=tmp_path,
    )
    assert out.strip() == "nuwo ino mak wawai"
