"""Training a text model from a manifest: bad input fails before training starts."""

import json

import pytest

from sigerlm.errors import ManifestError, RunFolderError
from sigerlm_testkit import add_plugin
from sigerlm_text import hooks
from sigerlm_text.tokenizers.bpe import BPETokenizer


@pytest.fixture
def manifest(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGER_CACHE_DIR", str(tmp_path / "cache"))
    texts = ["Nyak haga mengan di pekon.", "Saya mau makan di kampung.", "I want to eat in the village."] * 30
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    BPETokenizer.train(texts, vocab_size=300, min_frequency=1).save(tmp_path / "tok")
    data = {
        "use": "text_completion",
        "files": [str(tmp_path / "train.jsonl")],
        "tokenizer": str(tmp_path / "tok"),
        "seq_len": 16,
        "batch_size": 4,
    }
    return {
        "siger": 1,
        "name": "text-train",
        "model": {"profile": "tiny", "adapter": {"use": "text", "vocab_size": 300}},
        "data": {"train": data, "valid": dict(data, shuffle=False)},
        "steps": [
            {"use": "train", "max_steps": 60, "lr": 0.02, "warmup_steps": 5, "eval_every": 30, "progress": False}
        ],
    }


@pytest.fixture
def pm(plugin_manager):
    add_plugin(plugin_manager, hooks, "text")
    return plugin_manager


def test_a_text_model_trains_and_its_folder_loads(pm, run_manifest, manifest, tmp_path):
    from sigerlm_text.model import load_text_model

    result = run_manifest(manifest).results["steps"][0]["results"]
    assert result["valid_perplexity"] < result["unigram_perplexity"]  # it learned more than word frequencies
    model = load_text_model(tmp_path / "run" / "model", tokenizer=BPETokenizer.load(tmp_path / "tok"))
    assert model.adapter.vocab_size == 300


@pytest.mark.parametrize(
    "override, message",
    [
        ("steps[0].lr=-0.1", "steps[0].lr: Input should be greater than 0, got -0.1"),
        ("data.train.batch_size=0", "data.train.batch_size: Input should be greater than or equal to 1, got 0"),
        (
            "data.train.files[0]=/nowhere/train.jsonl",
            "data.train.files[0]: /nowhere/train.jsonl: file or folder not found",
        ),
    ],
)
def test_bad_input_fails_before_training(pm, run_manifest, manifest, tmp_path, override, message):
    with pytest.raises(ManifestError, match=message.replace("[", r"\[").replace("]", r"\]")):
        run_manifest(manifest, [override])
    assert not (tmp_path / "run").exists()


def test_a_finished_run_is_not_trained_over(pm, run_manifest, manifest, tmp_path):
    run_manifest(manifest)
    before = (tmp_path / "run" / "metrics.jsonl").read_text()
    with pytest.raises(RunFolderError, match="holds a finished run; use --force"):
        run_manifest(manifest)
    assert (tmp_path / "run" / "metrics.jsonl").read_text() == before
