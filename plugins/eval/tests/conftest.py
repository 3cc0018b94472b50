import pytest

pytest_plugins = ["sigerlm_testkit"]

TEXTS = [
    "Saya mau makan nasi goreng di warung dekat rumah.",
    "Kami pergi ke pasar pagi ini untuk membeli sayur dan ikan.",
    "Hujan turun sejak sore, jadi jalan di kampung menjadi basah.",
    "Anak itu belajar membaca buku cerita bersama ibunya.",
    "Pak guru menjelaskan pelajaran matematika dengan sabar.",
    "Kucing tidur di atas kursi karena cuaca sangat dingin.",
] * 4


@pytest.fixture(scope="session")
def tokenizer():
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    return BPETokenizer.train(TEXTS, vocab_size=320, min_frequency=1)


@pytest.fixture(scope="session")
def text_model(tokenizer):
    """A tiny random text model (d_model 16, 2 layers) with its tokenizer."""
    import torch

    from sigerlm.model.config import SigerConfig
    from sigerlm_text.model import text_model as build

    torch.manual_seed(0)
    # the pure-PyTorch scan: no wait for a kernel build (other work on this machine may be rebuilding it)
    config = SigerConfig.from_profile("tiny", scan="chunked")
    model = build(config, tokenizer.vocab_size, tokenizer).eval()
    with torch.no_grad():  # peaked predictions, so that context changes them (a fresh init is near uniform)
        model.adapter.embedding.weight.normal_(std=1.0)
        for name, param in model.backbone.named_parameters():
            if name.endswith(("in_proj.weight", "out_proj.weight")):
                param.mul_(8)
    return model


@pytest.fixture(scope="session")
def model_dir(text_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("model") / "model"
    text_model.save(folder)
    return folder


@pytest.fixture
def eval_pm(plugin_manager):
    """Core, the test kit, sigerlm-text and sigerlm-eval."""
    from sigerlm_testkit import add_plugin

    add_plugin(plugin_manager, "sigerlm_text.hooks", "text")
    add_plugin(plugin_manager, "sigerlm_eval.hooks", "eval")
    return plugin_manager


@pytest.fixture
def run_of(eval_pm, tmp_path):
    """``run_of(model)``: a run-like object holding the model, as siger eval builds it."""
    from sigerlm_eval.task import eval_run

    def make(model):
        return eval_run(eval_pm, model, tmp_path / "out")

    return make


@pytest.fixture(scope="session")
def texts():
    return list(TEXTS)


@pytest.fixture(scope="session")
def write_jsonl():
    """``write_jsonl(path, rows)``: rows as JSON lines; returns the path."""
    import json

    def write(path, rows):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return path

    return write
