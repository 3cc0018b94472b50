import pytest

pytest_plugins = ["sigerlm_testkit"]

TEXTS = [
    "Nyak haga mengan di pekon.",
    "Saya mau makan di kampung.",
    "I want to eat in the village. é ü 👋",
    "Tabik pun, api kabar?",
    "Halo, apa kabar? Baik, terima kasih.",
] * 30


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)


def build_tiny_model(folder, d_model=16, n_layers=2, vocab=300, seed=0):
    """A random SigerLM with a small trained BPE, saved as a model folder. The end tokens'
    embeddings are zero so greedy decoding runs to ``max_new_tokens``."""
    import torch

    from sigerlm.model.config import SigerConfig
    from sigerlm_text.model import text_model
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    tok = BPETokenizer.train(TEXTS, vocab_size=vocab, min_frequency=1)
    torch.manual_seed(seed)
    config = SigerConfig.from_profile("tiny", d_model=d_model, n_layers=n_layers)
    model = text_model(config, vocab_size=vocab, tokenizer=tok).eval()
    with torch.no_grad():
        for name in ("<|eos|>", "<|end_turn|>", "<|endoftext|>"):
            model.adapter.embedding.weight[tok.token_id(name)] = 0
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="session")
def exports(model_dir, tmp_path_factory):
    """``exports[q]``: the tiny model exported with quantization ``q`` (made on first use)."""
    from sigerlm.assemble import load_model
    from sigerlm.plugins import make_plugin_manager
    from sigerlm_onnx import hooks as onnx_hooks
    from sigerlm_testkit import add_plugin
    from sigerlm_text import hooks as text_hooks

    class Exports(dict):
        def __missing__(self, quantize):
            pm = make_plugin_manager(load="none")
            add_plugin(pm, text_hooks, "text")
            add_plugin(pm, onnx_hooks, "onnx")
            model = load_model(model_dir, pm)
            out = tmp_path_factory.mktemp("export") / quantize
            options = {"quantize": quantize, "parity_steps": 16, "parity_positions": 200}
            self[quantize] = pm.get_component("exporters", "onnx").build(model, out, options=options)
            return self[quantize]

    return Exports()
