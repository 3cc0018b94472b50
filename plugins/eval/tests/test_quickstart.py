"""registry/eval/quickstart.yaml on the model the README's main job makes (under its test overrides)."""

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.slow
def test_quickstart_task_on_the_quickstart_model(tmp_path, monkeypatch, capsys):
    from sigerlm.cli import main
    from sigerlm.manifest import load_manifest
    from sigerlm.run import execute
    from sigerlm_testkit import manifest_test_overrides

    manifest = ROOT / "registry" / "manifests" / "quickstart.yaml"
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("SIGER_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("SIGER_LOAD_PLUGINS", "text,eval")
    resolved, pm = load_manifest(manifest, [*manifest_test_overrides(manifest), f"out_dir={tmp_path / 'run'}"])
    assert execute(resolved, pm).status == "finished"
    with pytest.raises(SystemExit) as done:
        main(
            [
                "eval",
                str(tmp_path / "run" / "model"),
                "--task",
                "registry/eval/quickstart.yaml",
                "--out",
                str(tmp_path / "eval"),
            ]
        )
    assert done.value.code in (0, None)
    printed = capsys.readouterr().out
    for word in ("perplexity", "bits_per_byte", "pass_rate", "distinct_2", "copa-id", "acc_norm"):
        assert word in printed
    md = (tmp_path / "eval" / "eval.md").read_text()
    assert "| copa-id | n |" in md and "| generation-checks | n |" in md
