"""``siger lampung ...``: translate (arguments, stdin order, --json), gloss, route, eval, errors."""

import json

import pytest
from typer.testing import CliRunner

from sigerlm_lampung import service
from sigerlm_lampung.cli import app

runner = CliRunner()


@pytest.fixture
def shared(monkeypatch, translator):
    """The CLI on the session's translator (built once from the shared data)."""
    from sigerlm_lampung.translator import Translator

    def get(data_dir=None, meizano_path=None, generate=None, fallback_below=0.5):
        return Translator(translator.systems, translator.lms, generate, fallback_below, extend=translator.extend)

    monkeypatch.setattr(service, "get_translator", get)


def test_stdin_one_translation_a_line_in_order(shared):
    lines = ["Nyak haga mengan punyeu", "", "sanak ino mak sihat", "nuwo ino mak wawai", "Nikeu ago dak pasar"]
    out = runner.invoke(app, ["translate", "--from", "abl", "--to", "ind"], input="\n".join(lines) + "\n")
    assert out.exit_code == 0, out.output
    got = out.output.splitlines()
    assert len(got) == len(lines)
    assert got[0] in {"Aku mau makan ikan", "Saya mau makan ikan"}
    assert got[1] == ""
    assert got[2:] == ["anak itu tidak sehat", "rumah itu tidak bagus", "Kamu mau ke pasar"]


def test_json_adds_stage_and_confidence(shared):
    out = runner.invoke(
        app,
        ["translate", "--from", "ind", "--to", "abl", "--json"],
        input="saya mau makan ikan\nrumah itu tidak bagus\n",
    )
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.splitlines()]
    assert [r["stage"] for r in rows] == ["exact", "learned"]
    assert rows[1]["text"] == "nuwo ino mak wawai" and 0 < rows[1]["confidence"] <= 1
    assert rows[0]["source"] == "saya mau makan ikan" and rows[0]["direction"] == "ind-abl"


def test_text_argument_gloss_and_route(shared):
    out = runner.invoke(app, ["translate", "--to", "en", "Nyak", "haga", "mengan", "nasi"])
    assert out.exit_code == 0 and out.output.strip() == "I want to eat rice"
    out = runner.invoke(app, ["gloss", "sanak", "ino", "--json"])
    rows = json.loads(out.output)
    assert [r["word"] for r in rows] == ["sanak", "ino"]
    first = rows[0]["readings"][0]
    assert (first["translation"], first["from"]) == ("anak", "phrase table")
    assert 0.5 < first["p"] <= 1 and 0.5 < first["alignment"] <= 1


def test_bad_arguments_are_named(shared, tmp_path):
    out = runner.invoke(app, ["translate", "--from", "xx", "nyak"])
    assert out.exit_code == 2 and "unknown language 'xx'" in out.output
    out = runner.invoke(app, ["translate", "--from", "ind", "--to", "id", "saya"])
    assert out.exit_code == 2 and "both ind" in out.output
    out = runner.invoke(app, ["translate", "--model", str(tmp_path / "nope"), "nyak"])
    assert out.exit_code == 2 and "not a model folder" in out.output
    out = runner.invoke(app, ["translate", "--adapter", str(tmp_path), "nyak"])
    assert out.exit_code == 2 and "--adapter needs --model" in out.output
    out = runner.invoke(app, ["eval", "--folds", "1"])
    assert out.exit_code == 2 and "--folds" in out.output


def test_translate_builds_from_a_data_folder(tiny_data):
    out = runner.invoke(app, ["translate", "--data-dir", str(tiny_data), "--json"], input="Kuyuk ino mak sihat\n")
    assert out.exit_code == 0, out.output
    row = json.loads(out.output)
    assert row["stage"] == "learned" and row["text"] == "Anjing itu tidak sehat"
    out = runner.invoke(app, ["translate", "--data-dir", str(tiny_data / "nowhere"), "nyak"])
    assert out.exit_code == 2 and "data folder not found" in out.output


def test_eval_writes_json_and_markdown(tiny_data, tmp_path):
    out = runner.invoke(
        app, ["eval", "--data-dir", str(tiny_data), "--folds", "2", "--no-router", "--out", str(tmp_path / "eval.json")]
    )
    assert out.exit_code == 0, out.output
    report = json.loads((tmp_path / "eval.json").read_text())
    split = report["split"]["results"]
    assert set(split) == {"abl-ind", "ind-abl", "abl-eng", "eng-abl"}
    for block in split.values():
        assert {"exact", "bleu", "chrf++", "coverage"} <= set(block["system"])
        assert {"exact", "bleu", "chrf++", "coverage"} <= set(block["baseline"])
        assert abs(sum(s["share"] for s in block["by_stage"].values()) - 100) < 0.1
    cv = report["cross_validation"]
    assert cv["folds"] == 2 and cv["rows"] == 10 and set(cv["results"]) == {"abl-ind", "ind-abl"}
    md = (tmp_path / "eval.md").read_text()
    assert "word-by-word baseline" in md and "2-fold cross-validation over 10 human-written pairs" in md


def test_chat_routes_plain_messages(shared, monkeypatch):
    from sigerlm_lampung.router import LanguageId, Router

    model = LanguageId().fit(
        ["nyak haga mengan punyeu", "nikeu ago dak pasar", "saya mau makan", "i want to eat"],
        ["abl", "abl", "ind", "eng"],
    )
    monkeypatch.setattr(service, "get_router", lambda data_dir=None: Router(model))
    out = runner.invoke(
        app,
        ["chat"],
        input="nikeu ago dak pasar\nterjemahkan ke bahasa Lampung: saya mau makan\ni want to eat\n/chat halo\n/nope\n",
    )
    assert out.exit_code == 0, out.output
    text = out.output
    assert "(lampung_to_id) kamu mau ke pasar" in text
    assert "(id_to_lampung) nyak haga mengan" in text
    assert text.count("general chat needs a model") == 2
    assert "unknown command /nope" in text


def test_eval_on_a_pair_file_trains_without_its_pairs(tiny_data, tmp_path):
    file = tiny_data / "lampung" / "splits" / "valid.jsonl"
    out = runner.invoke(
        app,
        [
            "eval",
            "--data-dir",
            str(tiny_data),
            "--file",
            str(file),
            "--folds",
            "0",
            "--no-router",
            "--no-english",
            "--out",
            str(tmp_path / "eval.json"),
        ],
    )
    assert out.exit_code == 0, out.output
    report = json.loads((tmp_path / "eval.json").read_text())["split"]
    assert report["split"] == str(file) and report["rows"] == 5
    assert report["trained_on"] == 10  # 15 cleaned pairs (the noise row dropped), minus the file's 5
    assert set(report["results"]) == {"abl-ind", "ind-abl"}
    assert "cross_validation" not in json.loads((tmp_path / "eval.json").read_text())


def test_model_fallback_from_a_model_folder(tiny_data, tmp_path):
    import torch

    from sigerlm.model.config import SigerConfig
    from sigerlm_text.model import text_model
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    tok = BPETokenizer.train(
        ["Terjemahkan Lampung O ke Bahasa Indonesia: kuyuk ino mak sihat"] * 20, vocab_size=300, min_frequency=1
    )
    torch.manual_seed(0)
    text_model(SigerConfig.from_profile("tiny"), 300, tok).save_pretrained(tmp_path / "model")
    out = runner.invoke(
        app,
        [
            "translate",
            "--data-dir",
            str(tiny_data),
            "--model",
            str(tmp_path / "model"),
            "--fallback-below",
            "0.99",
            "--json",
        ],
        input="zwqxyl kuyuk\nKuyuk ino mak sihat\n",
    )
    assert out.exit_code == 0, out.output
    rows = [json.loads(line) for line in out.output.splitlines()]
    # an untrained model may say nothing useful: then the learned answer stays; never an empty line
    assert rows[0]["stage"] in {"model", "learned"} and rows[0]["text"]
    assert rows[1]["stage"] in {"model", "learned"}


def test_the_lampung_translation_evaluator_gives_the_cli_s_figures(tiny_data, tmp_path):
    """``lampung-translation`` (register_evaluators) reports what ``siger lampung eval`` reports,
    so ``siger eval`` and the ``evaluate`` step cover Lampung too."""
    import types

    from sigerlm.plugins import make_plugin_manager
    from sigerlm_lampung import hooks
    from sigerlm_testkit import add_plugin

    pm = make_plugin_manager(load="none")
    add_plugin(pm, hooks, "lampung")
    component = pm.get_component("evaluators", "lampung-translation")
    run = types.SimpleNamespace(state={}, plugin_manager=pm, seed=0, out_dir=tmp_path)
    metrics = component.build(run, options={"data_dir": str(tiny_data), "folds": 2})
    out = runner.invoke(
        app, ["eval", "--data-dir", str(tiny_data), "--folds", "2", "--no-router", "--out", str(tmp_path / "e.json")]
    )
    assert out.exit_code == 0, out.output
    report = json.loads((tmp_path / "e.json").read_text())
    for direction, block in report["split"]["results"].items():
        assert metrics[f"{direction}.chrf++"] == block["system"]["chrf++"]
        assert metrics[f"baseline.{direction}.exact"] == block["baseline"]["exact"]
    for direction, block in report["cross_validation"]["results"].items():
        assert metrics[f"cv.{direction}.chrf++"] == block["system"]["chrf++"]
    assert metrics["rows"] == report["split"]["rows"] and all(isinstance(v, (int, float)) for v in metrics.values())
