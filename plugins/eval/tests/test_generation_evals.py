"""bleu, chrf, rouge, diversity and generation-checks on a tiny model: the scores equal
sacrebleu / rouge-score called directly on the answers the evaluator generated."""

import pytest
import sacrebleu
from rouge_score import rouge_scorer


@pytest.fixture
def pairs(tmp_path, write_jsonl):
    rows = [
        {"instruction": "Terjemahkan: Nyak haga mengan", "output": "saya mau makan"},
        {"instruction": "Lanjutkan kalimat", "input": "Kami pergi ke", "output": "pasar pagi ini"},
        {"lampung": "Nyak ago dak pasar", "indonesian": "saya mau ke pasar"},
    ]
    return write_jsonl(tmp_path / "pairs.jsonl", rows)


def test_reference_metrics_equal_the_libraries(text_model, run_of, eval_pm, pairs):
    run = run_of(text_model)
    common = {"files": [str(pairs)], "max_new_tokens": 6}
    bleu = eval_pm.get_component("evaluators", "bleu").build(run, options={**common, "limit": 2})
    details = run.state["eval_details"]
    hyps, refs = [d["prediction"] for d in details], [d["reference"] for d in details]
    assert refs == ["saya mau makan", "pasar pagi ini"] and bleu["n"] == 2
    assert bleu["bleu"] == pytest.approx(sacrebleu.corpus_bleu(hyps, [refs]).score)
    chrf = eval_pm.get_component("evaluators", "chrf").build(run, options={**common, "limit": 2})
    assert chrf["chrf++"] == pytest.approx(sacrebleu.corpus_chrf(hyps, [refs], word_order=2).score)
    rouge = eval_pm.get_component("evaluators", "rouge").build(run, options={**common, "limit": 2})
    scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"])
    direct = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs, strict=True)]
    assert rouge["rougeL"] == pytest.approx(100 * sum(direct) / 2)
    assert len(run.state["eval_generations"]) == 1  # one decoding for the three metrics


def test_reference_template_on_pair_rows(text_model, run_of, eval_pm, pairs):
    run = run_of(text_model)
    options = {
        "files": [str(pairs)],
        "max_new_tokens": 4,
        "template": {"instruction": "Terjemahkan: {lampung}", "output": "{indonesian}"},
    }
    out = eval_pm.get_component("evaluators", "chrf").build(run, options=options)
    assert out["n"] == 1
    assert run.state["eval_details"][0]["prompt"] == "Terjemahkan: Nyak ago dak pasar"


def test_generation_checks_on_the_harness_rows(text_model, run_of, eval_pm, tmp_path, write_jsonl):
    rows = [
        {"id": "long", "prompt": "Jelaskan apa itu pasar.", "min_chars": 10_000},
        {"id": "easy", "prompt": "Halo", "min_chars": 0, "expected_not_contains": ["<|user|>"]},
    ]
    path = write_jsonl(tmp_path / "harness.jsonl", rows)
    run = run_of(text_model)
    out = eval_pm.get_component("evaluators", "generation-checks").build(
        run, options={"files": [str(path)], "max_new_tokens": 8}
    )
    assert out["n"] == 2 and out["failed_min_chars"] == 1 and out["passed"] == 1 and out["pass_rate"] == 0.5
    assert run.state["eval_details"][0]["failed"] == ["min_chars"]
    write_jsonl(path, [{"id": "x", "prompt": "Halo", "expected_contains": "def"}])
    from sigerlm_eval.common import EvalDataError

    with pytest.raises(EvalDataError, match=rf"{path}:1: 'expected_contains' must be a list of texts"):
        eval_pm.get_component("evaluators", "generation-checks").build(run, options={"files": [str(path)]})


def test_diversity_of_sampled_generations(text_model, run_of, eval_pm):
    from sigerlm_eval import diversity

    run = run_of(text_model)
    options = {"prompts": ["Saya mau", "Kami pergi"], "samples": 3, "max_new_tokens": 8, "seed": 1}
    out = eval_pm.get_component("evaluators", "diversity").build(run, options=options)
    groups = [d["samples"] for d in run.state["eval_details"]]
    assert [len(g) for g in groups] == [3, 3] and out["n"] == 6
    assert out == diversity.scores(groups)
    assert 0 < out["distinct_1"] <= 1
    again = eval_pm.get_component("evaluators", "diversity").build(run_of(text_model), options=options)
    assert again == out  # seeded
