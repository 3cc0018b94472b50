"""The decode scheduler: rows joining and leaving a shared batch decode exactly as alone."""

import threading
import time

import pytest
import torch

from sigerlm.runtime import TorchRuntime
from sigerlm_serving.scheduler import DecodeScheduler
from sigerlm_text.generation import GenerationConfig, Generator
from sigerlm_text.model import load_text_model

PROMPTS = ["Nyak haga", "Saya mau makan di kampung", "I want", "Tabik pun, api kabar?", "Halo"]


@pytest.fixture(scope="module")
def model(model_dir):
    torch.set_num_threads(1)
    return load_text_model(model_dir)


@pytest.fixture
def scheduler(model):
    sched = DecodeScheduler(TorchRuntime(model), model.adapter.tokenizer, max_batch=8)
    yield sched
    sched.close()


def collect(scheduler, prompt_ids, config, adapter=None):
    events, done = [], threading.Event()

    def on_event(event):
        events.append(event)
        if event[0] != "delta":
            done.set()

    job = scheduler.submit(prompt_ids, config, on_event, adapter)
    return job, events, done


@pytest.mark.parametrize(
    "config",
    [
        GenerationConfig(max_new_tokens=24),
        GenerationConfig(max_new_tokens=24, temperature=0.9, top_k=20, top_p=0.9, seed=3),
        GenerationConfig(max_new_tokens=24, repetition_penalty=1.3, stop=["a", "in"]),
    ],
    ids=["greedy", "sampled", "penalty-stop"],
)
def test_rows_joining_at_different_steps_match_the_generator(model, scheduler, config):
    tok = model.adapter.tokenizer
    gen = Generator(TorchRuntime(model), tok)
    expected = [gen.generate(p, config) for p in PROMPTS]
    expected_stream = ["".join(gen.stream(p, config)) for p in PROMPTS]
    runs = []
    for p in PROMPTS:  # staggered: each joins a batch that is already decoding
        runs.append(collect(scheduler, tok.encode(p), config))
        time.sleep(0.002)
    for (_job, events, done), want, want_stream in zip(runs, expected, expected_stream, strict=True):
        assert done.wait(30)
        kind, completion = events[-1]
        assert kind == "done"
        assert completion.text == want.text == want_stream
        assert "".join(e[1] for e in events if e[0] == "delta") == want.text
        assert completion.finish_reason == want.finish_reason
        assert completion.completion_tokens == len(want.token_ids)
        assert completion.prompt_tokens == want.prompt_tokens
    assert scheduler.stats["max_batch_seen"] >= 2


def test_a_cancelled_row_leaves_and_the_others_go_on(model, scheduler):
    tok = model.adapter.tokenizer
    config = GenerationConfig(max_new_tokens=400)
    gen = Generator(TorchRuntime(model), tok)
    gen.rules.end_ids = set()
    scheduler.rules.end_ids = set()  # decode the full length
    keep = collect(scheduler, tok.encode("Halo"), GenerationConfig(max_new_tokens=60))
    drop = collect(scheduler, tok.encode("Saya"), config)
    time.sleep(0.05)
    drop[0].cancel()
    assert drop[2].wait(10) and drop[1][-1][1].finish_reason == "cancelled"
    assert drop[1][-1][1].completion_tokens < 400
    assert keep[2].wait(30)
    assert keep[1][-1][1].text == gen.generate("Halo", GenerationConfig(max_new_tokens=60)).text


def test_blocking_run_and_a_failing_step_reports_an_error(model, scheduler, monkeypatch):
    tok = model.adapter.tokenizer
    assert scheduler.run(tok.encode("Halo"), GenerationConfig(max_new_tokens=5)).completion_tokens <= 5

    def broken(ids, state):
        raise RuntimeError("boom")

    monkeypatch.setattr(scheduler.runtime, "step", broken)
    with pytest.raises(RuntimeError, match="generation failed"):
        scheduler.run(tok.encode("Halo"), GenerationConfig(max_new_tokens=50))
    monkeypatch.undo()
    assert scheduler.run(tok.encode("Halo"), GenerationConfig(max_new_tokens=3)).finish_reason in ("length", "stop")


def test_adapters_are_never_mixed_in_one_batch(model_dir):
    """A stand-in for LoRA: each adapter scales the embedding. Every row must decode exactly as
    it does alone under its own adapter, so no step may hold rows of two adapters."""
    model = load_text_model(model_dir)
    tok = model.adapter.tokenizer
    base = model.adapter.embedding.weight.detach().clone()
    scales = {None: 1.0, "a": 1.7, "b": 0.6}

    def set_adapter(name):
        with torch.no_grad():
            model.adapter.embedding.weight.copy_(base * scales[name])

    config = GenerationConfig(max_new_tokens=12)
    adapters = [None, "a", None, "b", "a"] * 2
    prompts = PROMPTS * 2
    expected = []
    for prompt, adapter in zip(prompts, adapters, strict=True):
        set_adapter(adapter)
        expected.append(Generator(TorchRuntime(model), tok).generate(prompt, config).text)
    set_adapter(None)
    sched = DecodeScheduler(TorchRuntime(model), tok, max_batch=8, set_adapter=set_adapter)
    try:
        jobs = [collect(sched, tok.encode(p), config, a) for p, a in zip(prompts, adapters, strict=True)]
        for (_, events, done), adapter, want in zip(jobs, adapters, expected, strict=True):
            assert done.wait(30)
            assert events[-1][1].adapter == adapter and events[-1][1].text == want
    finally:
        sched.close()


def test_prompts_of_one_length_prefilled_together_match_the_generator(model, scheduler):
    tok = model.adapter.tokenizer
    prompts = [p for p in (f"Halo {w}" for w in "abcdefghijklmnop") if len(tok.encode(p)) == len(tok.encode("Halo a"))]
    assert len(prompts) >= 4
    gen = Generator(TorchRuntime(model), tok)
    config = GenerationConfig(max_new_tokens=16)
    with scheduler._cond:  # hold the loop so that all of them are admitted in one step
        runs = [collect(scheduler, tok.encode(p), config) for p in prompts]
    for (_, events, done), prompt in zip(runs, prompts, strict=True):
        assert done.wait(30)
        assert events[-1][1].text == gen.generate(prompt, config).text
