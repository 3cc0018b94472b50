"""The quickstart's model (shrunk by the manifest's test overrides) answers in `siger chat`."""

import subprocess
import sys
from pathlib import Path

import pytest

from sigerlm.manifest import load_manifest
from sigerlm.run import execute
from sigerlm_testkit import manifest_test_overrides

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_siger_chat_on_the_quickstart_model(tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("SIGER_CACHE_DIR", str(tmp_path / "cache"))
    path = ROOT / "registry" / "manifests" / "quickstart.yaml"
    resolved, pm = load_manifest(path, [*manifest_test_overrides(path), f"out_dir={tmp_path / 'run'}"])
    execute(resolved, pm)
    siger = Path(sys.executable).with_name("siger")
    lines = "Nyak haga mengan\n/temp 0.8\n/system Jawab singkat.\nSaya mau makan\n/reset\n/help\n/exit\n"
    out = subprocess.run(
        [siger, "chat", tmp_path / "run" / "model", "--max-new-tokens", "8", "--seed", "0"],
        input=lines,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "(temperature 0.8)" in out.stdout and "(system prompt set; history cleared)" in out.stdout
    assert "(history cleared)" in out.stdout and "/temp  /temp VALUE" in out.stdout
