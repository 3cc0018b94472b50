"""Hostile input to manifests and runs: nothing outside the run folder is ever replaced, and
every bad value is a one-line error naming the file or option, before any work."""

import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sigerlm.errors import ManifestError, SigerError
from sigerlm.manifest import load_manifest

DATA = {"use": "random-tokens", "vocab_size": 64, "seq_len": 16, "batch_size": 4, "num_batches": 2}


def manifest(**train):
    return {
        "siger": 1,
        "name": "hard",
        "model": {"profile": "tiny", "adapter": {"use": "random-embedding", "vocab_size": 64}},
        "data": {"train": DATA},
        "steps": [{"use": "train", "max_steps": 2, "progress": False, "plot": False, **train}],
    }


def test_save_model_never_replaces_a_folder_outside_the_run(plugin_manager, run_manifest, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    out = tmp_path / "runs" / "x"
    with pytest.raises(ManifestError, match=r"steps\[0\].save_model: \.\./\.\./victim is outside the run folder"):
        run_manifest(manifest(save_model="../../victim"), out_dir=out)
    assert (victim / "keep.txt").read_text() == "mine" and not out.exists()  # refused before any work
    with pytest.raises(ManifestError, match=r"steps\[0\].save_model: \. is the run folder"):
        run_manifest(manifest(save_model="."), out_dir=out)
    with pytest.raises(ManifestError, match="is an existing file"):
        run_manifest(manifest(save_model=str(victim / "keep.txt")), out_dir=out)
    # an empty or new folder outside the run is fine, and so is replacing one with --force
    run_manifest(manifest(save_model=str(tmp_path / "new")), out_dir=out)
    assert (tmp_path / "new" / "model.safetensors").is_file()
    run_manifest(manifest(save_model="../../victim"), out_dir=tmp_path / "runs" / "y", force=True)
    assert (victim / "model.safetensors").is_file()


def test_force_at_validation_comes_from_the_command_line(plugin_manager, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "keep.txt").write_text("mine")
    data = manifest(save_model=str(victim))
    with pytest.raises(ManifestError):
        load_manifest(data, pm=plugin_manager)
    load_manifest(data, pm=plugin_manager, force=True)


@pytest.mark.parametrize("where", ["/dev/null", "/proc/siger-run", "file"])
def test_an_out_dir_that_cannot_be_a_run_folder_is_refused(plugin_manager, tmp_path, where):
    if where == "file":
        where = str(tmp_path / "a-file")
        Path(where).write_text("x")
    with pytest.raises(ManifestError, match=r"out_dir: .*(system folder|is a file)"):
        load_manifest(manifest(), [f"out_dir={where}"], pm=plugin_manager)


def test_bad_values_are_one_line_errors(plugin_manager, tmp_path):
    path = tmp_path / "m.yaml"
    path.write_bytes(b"siger: 1\nname: caf\xe9\n")
    with pytest.raises(ManifestError, match="not UTF-8 text"):
        load_manifest(path, pm=plugin_manager)
    with pytest.raises(SigerError, match=r"--set steps\[0\].lr=\[: the value is not valid YAML"):
        load_manifest(manifest(), ["steps[0].lr=["], pm=plugin_manager)
    with pytest.raises(ManifestError, match="seed: Input should be less than or equal to 4294967295"):
        load_manifest(dict(manifest(), seed=2**40), pm=plugin_manager)
    for value in (float("inf"), float("nan")):
        with pytest.raises(ManifestError, match=r"steps\[0\].lr"):
            load_manifest(manifest(lr=value), pm=plugin_manager)
    huge = manifest()
    huge["model"]["config"] = {"d_model": 200_000, "n_layers": 64}
    with pytest.raises(ManifestError, match=r"model.config: a backbone of d_model 200000 x n_layers 64 .* GiB"):
        load_manifest(huge, pm=plugin_manager)


def test_every_damaged_checkpoint_stops_a_resume(plugin_manager, run_manifest, tmp_path):
    out = tmp_path / "run"
    run_manifest(manifest(checkpoint_every=1), out_dir=out)
    record = json.loads((out / "run.json").read_text())
    record.update(status="running", completed_steps=[])  # as if killed after its checkpoints
    (out / "run.json").write_text(json.dumps(record))
    for step in (out / "checkpoints").iterdir():
        (step / "checksums.json").write_text("[]")  # not an object
    (out / "checkpoints" / ".step-00000003.abc.tmp").mkdir()  # left by a killed write
    with pytest.raises(SigerError, match="every checkpoint in .* is damaged; start over with --force"):
        run_manifest(manifest(checkpoint_every=1), out_dir=out, resume=True)
    assert not (out / "checkpoints" / ".step-00000003.abc.tmp").exists()


def test_siger_validate_raises_only_project_errors_on_any_document(plugin_manager, tmp_path):
    """Hypothesis over manifest documents: anything YAML can hold, near and far from a valid one."""
    scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True), st.text(max_size=12))
    values = st.recursive(
        scalars,
        lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
        max_leaves=8,
    )
    keys = st.sampled_from(["siger", "name", "model", "data", "steps", "seed", "out_dir", "plugins", "x"])
    near = st.fixed_dictionaries(
        {"siger": st.sampled_from([1, 2, "1"]), "name": st.sampled_from(["ok", "", "a b"])}
    ).flatmap(lambda base: st.dictionaries(keys, values, max_size=5).map(lambda extra: {**base, **extra}))

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(st.one_of(near, st.dictionaries(keys, values, max_size=5)))
    def check(document):
        try:
            load_manifest(document, pm=plugin_manager)
        except SigerError:
            pass

    check()
    # and files that are not a manifest at all
    for i, text in enumerate(("[1, 2]", "just words", "{", "siger: [", "---\n---\n", "\x00\x01")):
        path = tmp_path / f"m{i}.yaml"
        path.write_text(text)
        with pytest.raises(ManifestError):
            load_manifest(path, pm=plugin_manager)
