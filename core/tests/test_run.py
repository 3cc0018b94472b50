"""Running manifests: the run folder, refusing to overwrite, resuming, lifecycle hooks."""

import json

import pytest
import yaml
from pydantic import BaseModel, ConfigDict

from sigerlm import hookimpl
from sigerlm.errors import ManifestError, RunFolderError
from sigerlm_testkit import add_plugin

MANIFEST = {
    "siger": 1,
    "name": "demo",
    "seed": 3,
    "model": {
        "profile": "tiny",
        "block": {"use": "identity"},
        "adapter": {"use": "random-embedding", "vocab_size": 16},
    },
    "data": {"train": {"use": "random-tokens", "vocab_size": 16, "num_batches": 3}},
    "steps": [{"use": "record-calls", "split": "train", "batches": 3}, {"use": "record-calls", "note": "second"}],
}


class FailOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")
    fail: bool = True


class Flaky:
    """A plugin whose step fails until told otherwise, and which records lifecycle hooks."""

    def __init__(self):
        self.events = []
        self.broken = True

    @hookimpl
    def register_steps(self, register):
        def flaky(run, options):
            self.events.append(("flaky", run.resume))
            if options.fail and self.broken:
                raise RuntimeError("step failed on purpose")
            return {"ok": 1}

        register("flaky", flaky, options=FailOptions)

    @hookimpl
    def prepare_run(self, run):
        self.events.append(("prepare", run.name))

    @hookimpl
    def run_finished(self, run, results):
        self.events.append(("finished", len(results["steps"])))


def test_run_writes_its_records(run_manifest, tmp_path):
    result = run_manifest(MANIFEST)
    out = result.out_dir
    assert result.status == "finished"
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "finished" and record["completed_steps"] == [0, 1]
    resolved = yaml.safe_load((out / "manifest.resolved.yaml").read_text())
    assert resolved["steps"][0]["use"] == "testkit:record-calls" and resolved["model"]["config"]["d_model"] == 16
    plugins = json.loads((out / "plugins.json").read_text())
    assert plugins[0]["name"] == "core" and plugins[0]["distribution"] == "sigerlm"
    metrics = json.loads((out / "metrics.json").read_text())
    first = metrics["steps"][0]["results"]
    assert first["tokens"] == 3 * 2 * 16
    assert 1.5 < first["loss"] < 5  # near ln(16) = 2.77 for an untrained model
    assert "step 1: testkit:record-calls" in (out / "run.log").read_text()


def test_runs_are_reproducible(run_manifest, tmp_path):
    a = run_manifest(MANIFEST, out_dir=tmp_path / "a").results["steps"][0]["results"]["loss"]
    b = run_manifest(MANIFEST, out_dir=tmp_path / "b").results["steps"][0]["results"]["loss"]
    c = run_manifest(MANIFEST, ["seed=4"], out_dir=tmp_path / "c").results["steps"][0]["results"]["loss"]
    assert a == b != c


def test_finished_run_is_not_overwritten_without_force(run_manifest, tmp_path):
    out = tmp_path / "run"
    run_manifest(MANIFEST, out_dir=out)
    before = (out / "metrics.json").read_text()
    with pytest.raises(RunFolderError, match="holds a finished run; use --force"):
        run_manifest(MANIFEST, out_dir=out)
    assert (out / "metrics.json").read_text() == before
    (out / "extra.bin").write_text("old output")
    run_manifest(MANIFEST, ["seed=9"], out_dir=out, force=True)
    assert not (out / "extra.bin").exists()
    assert (out / "metrics.json").read_text() != before


def test_resuming_a_finished_run_does_nothing(run_manifest, tmp_path):
    first = run_manifest(MANIFEST)
    again = run_manifest(MANIFEST, resume=True)
    assert again.results == first.results


def test_failed_run_is_resumed_from_the_failed_step(plugin_manager, run_manifest, tmp_path):
    flaky = Flaky()
    add_plugin(plugin_manager, flaky, "flaky")
    manifest = dict(MANIFEST, steps=MANIFEST["steps"][:1] + [{"use": "flaky"}])
    with pytest.raises(RuntimeError, match="on purpose"):
        run_manifest(manifest)
    out = tmp_path / "run"
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "failed" and record["completed_steps"] == [0]
    assert "on purpose" in record["error"]
    assert [s["index"] for s in json.loads((out / "metrics.json").read_text())["steps"]] == [0]
    with pytest.raises(RunFolderError, match=r"unfinished run \(status failed\); continue it with --resume"):
        run_manifest(manifest)
    # a changed manifest cannot be resumed: the message says what changed
    with pytest.raises(RunFolderError, match=r"steps\[1\].fail: True -> False"):
        run_manifest(manifest, ["steps[1].fail=false"], resume=True)
    # the cause goes away (it was outside the manifest); resume runs only the failed step
    flaky.broken = False
    flaky.events.clear()
    result = run_manifest(manifest, resume=True)
    assert result.status == "finished"
    assert flaky.events == [("prepare", "demo"), ("flaky", True), ("finished", 2)]
    assert [s["index"] for s in result.results["steps"]] == [0, 1]


def test_resume_skips_completed_steps_and_tells_steps(plugin_manager, run_manifest, tmp_path):
    flaky = Flaky()
    add_plugin(plugin_manager, flaky, "flaky")
    manifest = dict(MANIFEST, steps=MANIFEST["steps"][:1] + [{"use": "flaky", "fail": False}])
    out = tmp_path / "run"
    # simulate a run killed after step 0: run it fully, then mark step 1 as not done
    run_manifest(manifest)
    record = json.loads((out / "run.json").read_text())
    record.update(status="running", completed_steps=[0])
    (out / "run.json").write_text(json.dumps(record))
    flaky.events.clear()
    result = run_manifest(manifest, resume=True)
    assert result.status == "finished"
    assert flaky.events == [("prepare", "demo"), ("flaky", True), ("finished", 2)]
    assert [s["index"] for s in result.results["steps"]] == [0, 1]


def test_lifecycle_hooks_run_around_steps(plugin_manager, run_manifest):
    flaky = Flaky()
    add_plugin(plugin_manager, flaky, "flaky")
    run_manifest(dict(MANIFEST, steps=[{"use": "flaky", "fail": False}]))
    assert flaky.events == [("prepare", "demo"), ("flaky", False), ("finished", 1)]


def test_foreign_folder_is_never_touched(run_manifest, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    for kwargs in ({}, {"force": True}):
        with pytest.raises(RunFolderError, match="holds no SigerLM run"):
            run_manifest(MANIFEST, out_dir=out, **kwargs)
    assert (out / "thesis.tex").read_text() == "precious"


def test_invalid_manifest_does_no_work(run_manifest, tmp_path):
    with pytest.raises(ManifestError):
        run_manifest(dict(MANIFEST, steps=[{"use": "record-calls", "batchs": 1}]))
    assert not (tmp_path / "run").exists()


def test_folder_in_use_is_refused(run_manifest, tmp_path):
    import fcntl

    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunFolderError, match="another siger run is using"):
            run_manifest(MANIFEST, out_dir=out)


def test_corrupt_run_record_is_reported(run_manifest, tmp_path):
    out = tmp_path / "run"
    run_manifest(MANIFEST, out_dir=out)
    (out / "run.json").write_text("{half")
    with pytest.raises(RunFolderError, match="run.json is unreadable"):
        run_manifest(MANIFEST, out_dir=out, resume=True)
