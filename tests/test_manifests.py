"""Every example manifest in registry/manifests validates and runs.

Manifests that start from a model folder (``model.init_from``: the LoRA ones start from the
quickstart's model) get the model the quickstart manifest makes under its test overrides, so
the chain quickstart -> adapter is what runs."""

from pathlib import Path

import pytest
import yaml

from sigerlm.manifest import load_manifest
from sigerlm.run import execute
from sigerlm_testkit import manifest_test_overrides

ROOT = Path(__file__).resolve().parents[1]
MANIFESTS = sorted((ROOT / "registry" / "manifests").glob("*.yaml"))


def test_there_are_manifests():
    assert any(p.name == "quickstart.yaml" for p in MANIFESTS)


@pytest.fixture(scope="module")
def quickstart_model(tmp_path_factory):
    """The quickstart manifest's model folder, made under its test overrides."""
    out = tmp_path_factory.mktemp("quickstart")
    path = ROOT / "registry" / "manifests" / "quickstart.yaml"
    mp = pytest.MonkeyPatch()
    try:
        mp.chdir(ROOT)
        mp.setenv("SIGER_CACHE_DIR", str(out / "cache"))
        resolved, pm = load_manifest(path, [*manifest_test_overrides(path), f"out_dir={out / 'run'}"])
        assert execute(resolved, pm).status == "finished"
    finally:
        mp.undo()
    return out / "run" / "model"


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: p.name)
def test_manifest_runs(path, tmp_path, monkeypatch, request):
    overrides = [*manifest_test_overrides(path), f"out_dir={tmp_path / 'run'}"]
    if (yaml.safe_load(path.read_text(encoding="utf-8")).get("model") or {}).get("init_from"):
        overrides.append(f"model.init_from={request.getfixturevalue('quickstart_model')}")
    monkeypatch.chdir(ROOT)  # manifests name files relative to the repository
    monkeypatch.setenv("SIGER_CACHE_DIR", str(tmp_path / "cache"))
    resolved, pm = load_manifest(path, overrides)
    result = execute(resolved, pm)
    assert result.status == "finished"
    assert len(result.results["steps"]) == len(resolved.manifest.steps)
    assert (tmp_path / "run" / "manifest.resolved.yaml").exists()
