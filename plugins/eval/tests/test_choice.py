"""Multiple choice: log-likelihoods equal a hand computation from one full forward; shared
context state, batching and the step-by-step runtime path agree; templates; errors."""

import pytest
import torch

from sigerlm_eval.choice import Item, accuracy, make_item
from sigerlm_eval.hooks import MultipleChoiceOptions
from sigerlm_eval.scoring import ContinuationScorer
from sigerlm_text.generation import make_runtime
from sigerlm_text.model import lm_forward


def by_hand(model, context, continuation):
    """log p(continuation | context) from one forward over the concatenation."""
    ids = torch.tensor(context + continuation)
    with torch.no_grad():
        logp = torch.log_softmax(lm_forward(model, ids[None]).logits[0].double(), -1)
    return sum(float(logp[len(context) + i - 1, tok]) for i, tok in enumerate(continuation))


class StepOnly:
    """The torch runtime seen as another back-end: continuations go through ``step``."""

    name = "other"

    def __init__(self, runtime):
        self.inner = runtime

    def __getattr__(self, attr):
        if attr == "score":  # a runtime without score: scored one step at a time
            raise AttributeError(attr)
        return getattr(self.inner, attr)


def test_two_choice_item_equals_a_hand_computed_log_likelihood(text_model, tokenizer, eval_pm):
    first = tokenizer.special_tokens["<|endoftext|>"]
    context = [first, *tokenizer.encode("Hujan turun sejak sore, jadi")]
    choices = [tokenizer.encode(" jalan menjadi basah."), tokenizer.encode(" kucing")]
    runtime = make_runtime(text_model, "torch", None, eval_pm)
    direct = ContinuationScorer(text_model, runtime)
    assert hasattr(runtime, "score")
    (scored,) = direct.score([(context, choices)])
    for s, choice in zip(scored, choices, strict=True):
        assert s.tokens == len(choice)
        assert s.logprob == pytest.approx(by_hand(text_model, context, choice), abs=1e-4)
    stepped = ContinuationScorer(text_model, StepOnly(runtime))
    assert not hasattr(stepped.runtime, "score")
    (again,) = stepped.score([(context, choices)])
    assert [s.logprob for s in again] == pytest.approx([s.logprob for s in scored], abs=1e-4)


def test_batches_equal_one_item_at_a_time(text_model, tokenizer, eval_pm):
    runtime = make_runtime(text_model, "torch", None, eval_pm)
    scorer = ContinuationScorer(text_model, runtime)
    items = [
        ([0, *tokenizer.encode(text)], [tokenizer.encode(" a"), tokenizer.encode(" rumah dekat"), [5, 6, 7, 8]])
        for text in ("Saya mau", "Kami pergi ke pasar pagi ini", "Anak")
    ]
    together = scorer.score(items)
    alone = [scorer.score([item])[0] for item in items]
    for a, b in zip(together, alone, strict=True):
        assert [s.logprob for s in a] == pytest.approx([s.logprob for s in b], abs=1e-4)


def test_templates():
    options = MultipleChoiceOptions(files=["x.jsonl"], template="copa")
    row = {
        "premise": "Jalan menjadi basah.",
        "question": "cause",
        "choice1": "Hujan turun.",
        "choice2": "Matahari terbit.",
    }
    item = make_item("f:1", {**row, "label": 0}, options)
    assert item.context == "Jalan menjadi basah karena"
    assert item.choices == [" hujan turun.", " matahari terbit."]
    mmlu = make_item(
        "f:1",
        {"question": "2 + 2?", "choices": ["3", "4"], "answer": "B"},
        MultipleChoiceOptions(files=["x"], template="mmlu"),
    )
    assert (
        mmlu.context == "Pertanyaan: 2 + 2?\nA. 3\nB. 4\nJawaban:" and mmlu.choices == [" A", " B"] and mmlu.label == 1
    )
    arc = make_item(
        "f:1",
        {"question": "2 + 2?", "choices": ["3", "4"], "answer": 1},
        MultipleChoiceOptions(files=["x"], template="arc"),
    )
    assert arc.choices == [" 3", " 4"]


def test_acc_norm_divides_by_characters():
    from sigerlm_eval.scoring import Scored

    item = Item("f:1", "c", [" ab", " abcdefgh"], label=1)
    # sum prefers choice 0; per character (-3/3 = -1 against -4/9) prefers choice 1
    scores = [[Scored(-3.0, 1, False), Scored(-4.0, 4, False)]]
    result = accuracy([item], scores)
    assert result["acc"] == 0 and result["acc_norm"] == 1 and result["acc_per_token"] == 1


def test_evaluator_and_its_errors(text_model, run_of, tmp_path, eval_pm, write_jsonl):
    from sigerlm_eval.common import EvalDataError

    rows = [
        {
            "premise": "Jalan menjadi basah.",
            "question": "cause",
            "choice1": "Hujan turun.",
            "choice2": "Ada kucing.",
            "label": 0,
        },
        {
            "premise": "Saya lapar.",
            "question": "effect",
            "choice1": "Saya makan nasi.",
            "choice2": "Saya tidur.",
            "label": 0,
        },
    ]
    path = write_jsonl(tmp_path / "copa.jsonl", rows)
    run = run_of(text_model)
    out = eval_pm.get_component("evaluators", "multiple-choice").build(
        run, options={"files": [str(path)], "template": "copa", "batch_size": 1}
    )
    assert out["n"] == 2 and set(out) >= {"acc", "acc_norm", "acc_per_token"}
    details = run.state["eval_details"]
    assert [d["where"] for d in details] == [f"{path}:1", f"{path}:2"]
    assert out["acc"] == sum(d["pick"] == d["label"] for d in details) / 2
    write_jsonl(path, [rows[0], {**rows[1], "question": "why"}])
    with pytest.raises(EvalDataError, match=rf"{path}:2: 'question' must be one of \['cause', 'effect'\]"):
        eval_pm.get_component("evaluators", "multiple-choice").build(
            run, options={"files": [str(path)], "template": "copa"}
        )
    write_jsonl(path, [{"context": "a", "choices": ["b", "c"], "label": 2}])
    with pytest.raises(EvalDataError, match=rf"{path}:1: the answer must be a choice index 0..1"):
        eval_pm.get_component("evaluators", "multiple-choice").build(run, options={"files": [str(path)]})
