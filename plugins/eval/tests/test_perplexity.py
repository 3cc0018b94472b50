"""Perplexity against independent computations: a full forward's log-softmax, the train step's
validation loss on the same windows; stateful equals windowed when one window holds the document."""

import math
from pathlib import Path

import pytest
import torch

from sigerlm.runtime import TorchRuntime
from sigerlm_eval.scoring import document_nll, windowed_nll
from sigerlm_text.model import lm_forward


def reference_nll(model, ids):
    """Sum of -log p(ids[t] | ids[:t]) for t >= 1 from one full forward (no state, no chunks)."""
    ids = torch.tensor(ids)
    with torch.no_grad():
        logits = lm_forward(model, ids[None]).logits[0, :-1]
    return float(-torch.log_softmax(logits.double(), -1).gather(-1, ids[1:, None]).sum())


def test_stateful_equals_a_full_forward_at_any_chunk(text_model):
    ids = torch.randint(0, text_model.adapter.vocab_size, (200,), generator=torch.Generator().manual_seed(1)).tolist()
    expected = reference_nll(text_model, ids)
    for chunk in (1, 7, 64, 1000):
        nll, n = document_nll(TorchRuntime(text_model), ids, chunk)
        assert n == 199
        assert nll == pytest.approx(expected, rel=1e-4)


def test_windowed_equals_stateful_when_the_window_covers_the_document(text_model):
    ids = torch.randint(0, text_model.adapter.vocab_size, (150,), generator=torch.Generator().manual_seed(2)).tolist()
    stateful, _ = document_nll(TorchRuntime(text_model), ids, 16)
    assert windowed_nll(TorchRuntime(text_model), ids, 150, 75)[0] == pytest.approx(stateful, rel=1e-4)
    # shorter windows lose context: a different value, each token still scored once
    short, n = windowed_nll(TorchRuntime(text_model), ids, 20, 10)
    assert n == 149 and short != pytest.approx(stateful, rel=1e-4)
    # and equal to scoring each window by hand: window [begin, begin + 20) scores its new targets
    by_hand, done, begin = 0.0, 0, 0
    while done < 149:
        end = min(begin + 20, 149)
        window = ids[begin : end + 1]
        with torch.no_grad():
            logits = lm_forward(text_model, torch.tensor(window[:-1])[None]).logits[0]
        logp = torch.log_softmax(logits.double(), -1)
        for t in range(done + 1, end + 1):
            by_hand -= float(logp[t - 1 - begin, ids[t]])
        done, begin = end, begin + 10
    assert short == pytest.approx(by_hand, rel=1e-4)


def test_perplexity_evaluator_on_files(text_model, tokenizer, run_of, tmp_path, eval_pm, texts, write_jsonl):
    docs = texts[:3]
    write_jsonl(tmp_path / "docs.jsonl", [{"text": t} for t in docs])
    (tmp_path / "one.txt").write_text(texts[3], encoding="utf-8")
    component = eval_pm.get_component("evaluators", "perplexity")
    out = component.build(
        run_of(text_model), options={"files": [str(tmp_path / "docs.jsonl"), str(tmp_path / "one.txt")]}
    )
    first = tokenizer.special_tokens["<|endoftext|>"]
    total = sum(reference_nll(text_model, [first, *tokenizer.encode(t)]) for t in texts[:4])
    tokens = sum(len(tokenizer.encode(t)) for t in texts[:4])
    n_bytes = sum(len(t.encode()) for t in texts[:4])
    assert out["documents"] == 4 and out["tokens"] == tokens and out["bytes"] == n_bytes
    assert out["perplexity"] == pytest.approx(math.exp(total / tokens), rel=1e-4)
    assert out["bits_per_byte"] == pytest.approx(total / math.log(2) / n_bytes, rel=1e-4)
    windowed = component.build(
        run_of(text_model),
        options={
            "files": [str(tmp_path / "docs.jsonl"), str(tmp_path / "one.txt")],
            "mode": "windowed",
            "window": 1000,
        },
    )
    assert windowed["perplexity"] == pytest.approx(out["perplexity"], rel=1e-4)


def test_dataset_mode_equals_the_train_steps_validation_loss(
    text_model, run_of, tmp_path, eval_pm, monkeypatch, texts, write_jsonl
):
    from sigerlm.training.train import evaluate

    monkeypatch.setenv("SIGER_CACHE_DIR", str(tmp_path / "cache"))
    write_jsonl(tmp_path / "valid.jsonl", [{"text": t} for t in texts])
    data = {
        "use": "text_completion",
        "files": [str(tmp_path / "valid.jsonl")],
        "seq_len": 16,
        "batch_size": 4,
        "shuffle": False,
    }
    run = run_of(text_model)
    out = eval_pm.get_component("evaluators", "perplexity").build(run, options={"dataset": data})
    dataset = eval_pm.get_component("datasets", "text_completion").build(
        run, options={k: v for k, v in data.items() if k != "use"}
    )
    expected = evaluate(text_model, dataset, 10_000, torch.device("cpu"))
    assert out["tokens"] == expected["tokens"] > 0
    assert out["perplexity"] == pytest.approx(expected["perplexity"], rel=1e-5)
    assert out["perplexity"] == pytest.approx(math.exp(expected["loss"]), rel=1e-5)


def test_dataset_mode_works_on_a_non_text_adapter(eval_pm, tiny_config, tmp_path):
    """Modality-neutral: the test kit's random-embedding adapter with the random-tokens dataset."""
    from sigerlm.assemble import build_model
    from sigerlm_eval.task import eval_run

    torch.manual_seed(0)
    model = build_model(eval_pm, tiny_config, {"use": "random-embedding", "vocab_size": 64}).eval()
    run = eval_run(eval_pm, model, tmp_path)
    data = {"use": "random-tokens", "vocab_size": 64, "seq_len": 8, "batch_size": 2, "num_batches": 3}
    out = eval_pm.get_component("evaluators", "perplexity").build(run, options={"dataset": data})
    options = {k: v for k, v in data.items() if k != "use"}
    with torch.no_grad():
        losses = [
            float(model(batch))
            for batch in eval_pm.get_component("datasets", "random-tokens").build(run, options=options)
        ]
    assert out["tokens"] == 3 * 2 * 7  # count_tokens: every position but the last
    assert out["perplexity"] == pytest.approx(math.exp(sum(losses) / 3), rel=1e-5)


def test_errors_name_the_file_and_line(text_model, run_of, tmp_path, eval_pm):
    from sigerlm_eval.common import EvalDataError

    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "baik"}\n\n{"text": 3}\n', encoding="utf-8")
    with pytest.raises(EvalDataError, match=rf"{path}:3: 'text' must be non-empty text"):
        eval_pm.get_component("evaluators", "perplexity").build(run_of(text_model), options={"files": [str(path)]})
    path.write_text('{"text": "baik"}\n{oops\n', encoding="utf-8")
    with pytest.raises(EvalDataError, match=rf"{path}:2: not valid JSON"):
        eval_pm.get_component("evaluators", "perplexity").build(run_of(text_model), options={"files": [str(path)]})


def _peak_rss_growth(fn):
    """Peak resident memory while ``fn`` runs, minus the memory before (Linux: clear_refs resets the peak)."""
    Path("/proc/self/clear_refs").write_text("5")

    def field(name):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(name):
                return int(line.split()[1]) * 1024

    before = field("VmRSS:")
    result = fn()
    return field("VmHWM:") - before, result


@pytest.mark.slow
def test_a_100k_token_document_in_constant_memory(text_model, monkeypatch):
    ids = torch.randint(0, text_model.adapter.vocab_size, (100_001,), generator=torch.Generator().manual_seed(3))
    lengths = []
    forward = text_model.forward_hidden

    def spy(embeds, state=None, return_state=False):
        lengths.append(embeds.shape[1])
        return forward(embeds, state, return_state)

    monkeypatch.setattr(text_model, "forward_hidden", spy)
    short_growth, _ = _peak_rss_growth(lambda: document_nll(TorchRuntime(text_model), ids[:10_001], 1024))
    long_growth, (nll, n) = _peak_rss_growth(lambda: document_nll(TorchRuntime(text_model), ids, 1024))
    assert n == 100_000 and math.isfinite(nll)
    assert max(lengths) == 1024  # never more than a chunk at once
    # full logits would be 100k x 320 floats = 128 MB; chunks hold 1024 x 320
    assert long_growth < short_growth + 16 * 2**20, (short_growth, long_growth)


def test_a_runtime_without_score_gives_the_same_perplexity_step_by_step(text_model, tokenizer):
    class StepOnly:
        def __init__(self, runtime):
            self.prefill, self.step = runtime.prefill, runtime.step

    ids = [0, *tokenizer.encode("Hujan turun sejak sore, jadi jalan menjadi basah dan licin.")]
    runtime = TorchRuntime(text_model)
    for chunk in (4, 1000):
        expected, n = document_nll(runtime, ids, chunk)
        got, m = document_nll(StepOnly(runtime), ids, chunk)
        assert m == n and got == pytest.approx(expected, rel=1e-5)
