"""Every example manifest in registry/manifests validates and runs."""

from pathlib import Path

import pytest

from sigerlm.manifest import load_manifest
from sigerlm.run import execute
from sigerlm.testing import manifest_test_overrides

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((ROOT / "registry" / "manifests").glob("*.yaml"))


def test_there_are_manifests():
    assert any(p.name == "quickstart.yaml" for p in MANIFESTS)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_runs(path, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # manifests name files relative to the repository
    monkeypatch.setenv("SIGER_CACHE_DIR", str(tmp_path / "cache"))
    resolved, pm = load_manifest(path, [*manifest_test_overrides(path), f"out_dir={tmp_path / 'run'}"])
    result = execute(resolved, pm)
    assert result.status == "finished"
    assert len(result.results["steps"]) == len(resolved.manifest.steps)
    assert (tmp_path / "run" / "manifest.resolved.yaml").exists()
