"""Datasets (streaming, cached), the chat template's labels, and the corpus builder."""

import json
from pathlib import Path

import pytest
import torch

from sigerlm.errors import SigerError
from sigerlm.paths import data_dir
from sigerlm_testkit import add_plugin
from sigerlm_text import hooks
from sigerlm_text.chat import instruction_to_messages, render
from sigerlm_text.corpus import build_corpus, load_config
from sigerlm_text.datasets import ChatJsonl, InstructionJsonl, TextCompletion, expand
from sigerlm_text.tokenizers.bpe import BPETokenizer

ROOT = Path(__file__).resolve().parents[3]


class FakeRun:
    seed, rank, world_size, state = 0, 0, 1, {}


@pytest.fixture(scope="module")
def tok():
    texts = ["Saya mau makan nasi.", "I want to eat rice.", "Nyak haga mengan.", "halo apa kabar"] * 10
    return BPETokenizer.train(texts, vocab_size=300, min_frequency=1)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SIGER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def test_chat_example_labels_exactly_the_assistant_content_and_its_end_turn(tok):
    messages = [
        {"role": "system", "content": "Kamu penerjemah."},
        {"role": "user", "content": "Nyak haga mengan <|system|>"},
        {"role": "assistant", "content": "<thought>pikir</thought>Saya mau makan."},
    ]
    ids, trained = render(tok, messages)
    pieces = [(tok.decode([i]), t) for i, t in zip(ids, trained, strict=True)]
    labelled = "".join(p for p, t in pieces if t)
    assert labelled == "<thought>pikir</thought>Saya mau makan.<|end_turn|>"
    unlabelled = "".join(p for p, t in pieces if not t)
    assert (
        unlabelled
        == "<|system|>Kamu penerjemah.<|end_turn|><|user|>Nyak haga mengan <|system|><|end_turn|><|assistant|>"
    )
    # the <|system|> typed inside the user's message is text, not the control token
    assert ids.count(tok.token_id("<|system|>")) == 1
    assert tok.token_id("<thought>") in ids


def test_instruction_rows_put_reasoning_in_thought_tags():
    row = {"instruction": "Terjemahkan", "input": "mau", "output": "haga", "reasoning": "kata kerja", "system": "S"}
    assert instruction_to_messages(row) == [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "Terjemahkan\n\nmau"},
        {"role": "assistant", "content": "<thought>kata kerja</thought>haga"},
    ]


def test_instruction_templates_make_both_directions_of_a_pair(tok, tmp_path, monkeypatch):
    monkeypatch.setenv("SIGER_CACHE_DIR", str(tmp_path / "cache"))
    rows = [
        {"lampung": "nyak haga mengan", "indonesian": "saya mau makan", "english": "", "dialect": "o"},
        {"lampung": "api kabar", "indonesian": "apa kabar", "english": "how are you", "dialect": "o"},
        {"lampung": "kik ram", "indonesian": "kalau kita", "english": "if we", "dialect": "a"},
    ]
    path = tmp_path / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    templates = [
        {"instruction": "Terjemahkan ke bahasa Indonesia: {lampung}", "output": "{indonesian}"},
        {"instruction": "Translate to Lampung: {english}", "output": "{lampung}"},
    ]
    ds = InstructionJsonl(
        FakeRun(),
        tok,
        [path],
        seq_len=64,
        batch_size=1,
        shuffle=False,
        options={"templates": templates, "where": {"dialect": "o"}},
        templates=templates,
        where={"dialect": ["o"]},
    )
    assert ds.problems == []
    # row 1: one example (no English); row 2: two; row 3: dialect A, left out
    expected = [
        [
            {"role": "user", "content": "Terjemahkan ke bahasa Indonesia: nyak haga mengan"},
            {"role": "assistant", "content": "saya mau makan"},
        ],
        [
            {"role": "user", "content": "Terjemahkan ke bahasa Indonesia: api kabar"},
            {"role": "assistant", "content": "apa kabar"},
        ],
        [
            {"role": "user", "content": "Translate to Lampung: how are you"},
            {"role": "assistant", "content": "api kabar"},
        ],
    ]
    assert ds.cache.meta["examples"] == 3
    got = [b["input_ids"][0].tolist() for b in ds]
    assert got == [render(tok, m)[0][:-1] for m in expected]


def test_conversation_batches_shift_labels_and_pad(tok, tmp_path):
    rows = [
        {"instruction": "halo", "output": "apa kabar"},
        {"instruction": "Saya mau makan nasi.", "output": "Nyak haga mengan."},
    ]
    path = tmp_path / "i.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n" + json.dumps({"instruction": "x"}) + "\n")
    ds = InstructionJsonl(FakeRun(), tok, [path], seq_len=64, batch_size=2, shuffle=False, options={})
    assert ds.problems == [
        f"{path}:3: not valid JSON (Expecting property name enclosed in double quotes)",
        f"{path}:4: 'output' must be non-empty text",
    ]
    batch = next(iter(ds))
    ids, labels = batch["input_ids"], batch["labels"]
    assert ids.shape == labels.shape and ids.shape[0] == 2
    first_ids, first_mask = render(tok, instruction_to_messages(rows[0]))
    n = len(first_ids) - 1  # the first example is the shorter one: padded after its tokens
    assert ids[0, : n + 1].tolist() == first_ids
    expected = [t if m else -100 for t, m in zip(first_ids[1:], first_mask[1:], strict=True)]
    assert labels[0, :n].tolist() == expected
    assert (labels[0, n:] == -100).all() and (ids[0, n + 1 :] == tok.pad_id).all()


def test_text_completion_windows_and_the_cache(tok, tmp_path, cache):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(json.dumps({"text": f"Saya mau makan nasi. {i}"}) for i in range(40)) + "\n")
    ds = TextCompletion(FakeRun(), tok, [path], 16, 3, False, {"field": "text"}, field="text", stride=8)
    batch = next(iter(ds))
    assert batch["input_ids"].shape == (3, 16)
    assert torch.equal(batch["input_ids"][:, 1:], batch["labels"][:, :-1])  # targets are the next tokens
    assert torch.equal(batch["input_ids"][1, :8], batch["input_ids"][0, 8:])  # stride 8
    eot = tok.token_id("<|endoftext|>")
    assert eot in batch["input_ids"].flatten().tolist()
    folders = list(cache.rglob("meta.json"))
    assert len(folders) == 1
    again = TextCompletion(FakeRun(), tok, [path], 16, 3, False, {"field": "text"}, field="text", stride=8)
    assert again.cache.folder == ds.cache.folder  # read from the cache, not tokenized again
    path.write_text(path.read_text() + json.dumps({"text": "baru"}) + "\n")
    changed = TextCompletion(FakeRun(), tok, [path], 16, 3, False, {"field": "text"}, field="text", stride=8)
    assert changed.cache.folder != ds.cache.folder


def test_ranks_read_disjoint_shards(tok, tmp_path):
    path = tmp_path / "c.jsonl"
    rows = [
        {"messages": [{"role": "user", "content": f"q{i}"}, {"role": "assistant", "content": f"a{i}"}]}
        for i in range(8)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    seen = []
    for rank in (0, 1):
        run = FakeRun()
        run.rank, run.world_size = rank, 2
        ds = ChatJsonl(run, tok, [path], 32, 1, True, {})
        seen.append({tuple(b["input_ids"][0].tolist()) for b in ds})
    assert len(seen[0]) == len(seen[1]) == 4 and not seen[0] & seen[1]


def test_datasets_in_a_manifest_with_the_text_adapter(plugin_manager, run_manifest, tok, tmp_path):
    add_plugin(plugin_manager, hooks, "text")
    tok.save(tmp_path / "tok")
    path = tmp_path / "chat.jsonl"
    path.write_text(
        "\n".join(
            json.dumps(
                {"messages": [{"role": "user", "content": "halo"}, {"role": "assistant", "content": "apa kabar"}]}
            )
            for _ in range(4)
        )
        + "\n"
    )
    manifest = {
        "siger": 1,
        "name": "chat",
        "model": {"profile": "tiny", "adapter": {"use": "text", "vocab_size": 300}},
        "data": {
            "train": {"use": "chat_jsonl", "files": [str(path)], "tokenizer": str(tmp_path / "tok"), "batch_size": 2}
        },
        "steps": [{"use": "record-calls", "split": "train", "batches": 2}],
    }
    result = run_manifest(manifest).results["steps"][0]["results"]
    assert result["tokens"] > 0 and result["loss"] > 0


def write_config(tmp_path, sources, seed=3):
    path = tmp_path / "config.yaml"
    path.write_text(json.dumps({"name": "mix", "seed": seed, "max_repeat": 2, "sources": sources}))
    return load_config(path)


def test_corpus_builder_reports_bad_rows_and_is_deterministic(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(
        "\n".join(json.dumps({"text": f"kalimat nomor {i}"}) for i in range(30))
        + "\n"
        + json.dumps({"text": "kalimat nomor 1"})
        + "\n"
    )  # a duplicate
    broken = tmp_path / "broken.jsonl"
    broken.write_text(
        "\n".join(
            [
                json.dumps({"text": "baik"}),
                "{not json",
                json.dumps({"other": "x"}),
                json.dumps({"text": 42}),
                json.dumps({"text": "   "}),
                json.dumps(["list"]),
                json.dumps({"text": "Kalimat   NOMOR 2"}),  # a duplicate under normalisation
            ]
        )
        + "\n"
    )
    config = write_config(
        tmp_path,
        [
            {"path": str(good), "format": "text", "lang": "ind", "max_rows": 20},
            {"path": str(broken), "format": "text", "weight": 3.5, "dedup": "normalized"},
        ],
    )
    report = build_corpus(config, tmp_path, tmp_path / "a.jsonl")
    assert report["bad_rows"] == [
        f"{broken}:2: not valid JSON (Expecting property name enclosed in double quotes)",
        f"{broken}:3: missing field 'text'",
        f"{broken}:4: 'text' must be text, got int",
        f"{broken}:5: 'text' is empty",
        f"{broken}:6: not an object",
    ]
    first, second = report["sources"]
    assert (first["read"], first["duplicates"], first["over_max_rows"], first["kept"]) == (31, 1, 10, 20)
    assert (second["bad"], second["kept"], second["written"], second["oversampling_capped"]) == (5, 1, 2, True)
    rows = [json.loads(line) for line in (tmp_path / "a.jsonl").read_text().splitlines()]
    assert len(rows) == report["rows"] == 22 and rows[0]["source"] in ("good:text", "broken:text")
    build_corpus(config, tmp_path, tmp_path / "b.jsonl")
    assert (tmp_path / "a.jsonl").read_bytes() == (tmp_path / "b.jsonl").read_bytes()
    build_corpus(config, tmp_path, tmp_path / "c.jsonl", seed=99)
    assert (tmp_path / "a.jsonl").read_bytes() != (tmp_path / "c.jsonl").read_bytes()
    assert json.loads((tmp_path / "a.jsonl.report.json").read_text())["bad"] == 5


def test_corpus_configs_are_checked(tmp_path):
    with pytest.raises(SigerError, match="mixes text and conversation sources"):
        write_config(tmp_path, [{"path": "a", "format": "text"}, {"path": "b", "format": "chat"}])
    with pytest.raises(SigerError, match="parallel needs source_field, target_field and instruction"):
        write_config(tmp_path, [{"path": "a", "format": "parallel"}])
    with pytest.raises(SigerError, match="sources.0.wieght: Extra inputs are not permitted"):
        write_config(tmp_path, [{"path": "a", "format": "text", "wieght": 2}])


@pytest.mark.parametrize("name", ["general-text", "instruction", "lampung-translation"])
def test_shipped_dataset_configs_build_from_the_shared_data(name, tmp_path):
    config = load_config(ROOT / "registry" / "datasets" / f"{name}.yaml")
    report = build_corpus(config, data_dir(), tmp_path / "corpus.jsonl")
    assert report["rows"] > 500 and report["bad"] == 0
    assert expand([str(tmp_path / "corpus.jsonl")], (".jsonl",))
