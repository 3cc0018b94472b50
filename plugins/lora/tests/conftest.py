import json

import pytest

pytest_plugins = ["sigerlm_testkit"]

ROWS = [
    {"lampung": "nyak haga mengan", "indonesian": "saya mau makan", "english": "I want to eat"},
    {"lampung": "nikeu haga minum", "indonesian": "kamu mau minum", "english": "you want to drink"},
    {"lampung": "sikam lapah mit pasar", "indonesian": "kami pergi ke pasar", "english": ""},
    {"lampung": "api kabar", "indonesian": "apa kabar", "english": "how are you"},
]


@pytest.fixture(scope="session")
def pairs_file(tmp_path_factory):
    """A small parallel file shaped like ../shared/data/lampung/splits/*.jsonl."""
    path = tmp_path_factory.mktemp("pairs") / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ROWS * 6), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tokenizer(pairs_file):
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    texts = [r[k] for r in ROWS for k in ("lampung", "indonesian", "english") if r[k]]
    texts += ["Terjemahkan ke bahasa Indonesia:", "Terjemahkan ke bahasa Lampung:"]
    return BPETokenizer.train(iter(texts * 20), vocab_size=300, min_frequency=1)


def make_base(folder, tokenizer, seed=0):
    """A tiny random text model saved as a model folder."""
    import torch

    from sigerlm.model.config import SigerConfig
    from sigerlm_text.model import text_model

    torch.manual_seed(seed)
    model = text_model(SigerConfig.from_profile("tiny", max_seq_len=64), 320, tokenizer)
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def base_dir(tmp_path_factory, tokenizer):
    return make_base(tmp_path_factory.mktemp("base") / "model", tokenizer)


@pytest.fixture(scope="session")
def other_base_dir(tmp_path_factory, tokenizer):
    return make_base(tmp_path_factory.mktemp("other") / "model", tokenizer, seed=1)
