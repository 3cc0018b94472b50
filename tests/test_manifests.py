"""Every example manifest in registry/manifests validates and runs."""

from pathlib import Path

import pytest

from sigerlm.manifest import load_manifest
from sigerlm.run import execute

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((ROOT / "registry" / "manifests").glob("*.yaml"))


def test_there_are_manifests():
    assert any(p.name == "quickstart.yaml" for p in MANIFESTS)


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_runs(path, tmp_path):
    resolved, pm = load_manifest(path)
    result = execute(resolved, pm, out_dir=tmp_path / "run")
    assert result.status == "finished"
    assert len(result.results["steps"]) == len(resolved.manifest.steps)
    assert (tmp_path / "run" / "manifest.resolved.yaml").exists()
