import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

pytest_plugins = ["sigerlm_testkit"]


@pytest.fixture(scope="session")
def shared_bpe():
    """A BPE trained on every text file of ../shared/data (about two seconds)."""
    from sigerlm.paths import data_dir
    from sigerlm_text.corpus_text import iter_documents
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    return BPETokenizer.train(iter_documents([data_dir()]), vocab_size=8000)


# -- the interop tests' kit (test_interop.py, test_gguf.py): the `kit` fixture --------------------
TEXTS = [
    "Nyak haga mengan di pekon.",
    "Saya mau makan di kampung.",
    "I want to eat in the village. é ü 👋",
    "Tabik pun, api kabar?",
    "Halo, apa kabar? Baik, terima kasih.",
] * 30
PROMPT = "Tabik pun, nyak haga mengan di"


def tiny_text_model(folder, d_model=32, n_layers=2, vocab=300, seed=0):
    """A quickstart-shaped model (text adapter, trained BPE, tied head, ssm blocks) with random
    weights moved away from the initialisation, and its end tokens' rows zeroed so greedy
    decoding does not stop."""
    import torch

    from sigerlm.model.config import SigerConfig
    from sigerlm_text.model import text_model
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    tok = BPETokenizer.train(TEXTS, vocab_size=vocab, min_frequency=1)
    torch.manual_seed(seed)
    config = SigerConfig.from_profile("tiny", d_model=d_model, n_layers=n_layers)
    model = text_model(config, vocab_size=vocab, tokenizer=tok).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
        for name in ("<|eos|>", "<|end_turn|>", "<|endoftext|>"):
            model.adapter.embedding.weight[tok.token_id(name)] = 0
    model.save(folder)
    return folder


def greedy(model, ids, steps):
    import torch

    from sigerlm_text.model import lm_forward

    ids = list(ids)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(lm_forward(model, torch.tensor([ids])).logits[0, -1].argmax()))
    return ids


def siger_cli(*args, **env):
    exe = Path(sys.executable).with_name("siger")
    variables = {**os.environ, "SIGER_LOAD_PLUGINS": "text", "OMP_NUM_THREADS": "1", **env}
    return subprocess.run([str(exe), *map(str, args)], capture_output=True, text=True, timeout=600, env=variables)


@pytest.fixture(scope="session")
def kit():
    """The tiny quickstart-shaped model and the helpers the interop tests share."""
    return SimpleNamespace(
        TEXTS=TEXTS, PROMPT=PROMPT, tiny_text_model=tiny_text_model, greedy=greedy, siger_cli=siger_cli
    )
