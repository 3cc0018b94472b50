"""plugins/_template is a working scaffold: its hooks register cleanly and its tests pass."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = ROOT / "plugins" / "_template"


def test_template_metadata_points_at_its_hooks():
    project = tomllib.loads((TEMPLATE / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["sigerlm"] == {"example": "sigerlm_example.hooks"}
    assert (TEMPLATE / "src" / "sigerlm_example" / "hooks.py").is_file()


def test_copied_template_passes_its_own_tests(tmp_path):
    copy = tmp_path / "sigerlm-example"
    shutil.copytree(TEMPLATE, copy)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGER_")}
    env["PYTHONPATH"] = str(copy / "src")
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(copy), str(copy / "tests")],
        env=env,
        cwd=copy,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout
