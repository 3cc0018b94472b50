import pytest

pytest_plugins = ["sigerlm.testing"]

TEXTS = ["Nyak haga mengan di pekon.", "Saya mau makan di kampung.", "I want to eat in the village. é ü 👋",
         "Tabik pun, api kabar?", "Halo, apa kabar? Baik, terima kasih."] * 30


def build_tiny_model(folder, d_model=16, n_layers=2, vocab=300, seed=0):
    """A random SigerLM with a small trained BPE, saved as a model folder."""
    import torch
    from sigerlm.model.config import SigerConfig
    from sigerlm_text.model import SigerLM
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    tok = BPETokenizer.train(TEXTS, vocab_size=vocab, min_frequency=1)
    torch.manual_seed(seed)
    config = SigerConfig.from_profile("tiny", d_model=d_model, n_layers=n_layers)
    model = SigerLM(config, vocab_size=vocab, tokenizer=tok).eval()
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def make_client(model_dir, tmp_path):
    """``make_client(**settings) -> TestClient`` on a fresh database in ``tmp_path``."""
    from fastapi.testclient import TestClient
    from sigerlm.plugins import make_plugin_manager
    from sigerlm_serving.app import create_app
    from sigerlm_serving.settings import ServeSettings

    clients = []

    def make(db=None, **overrides):
        settings = ServeSettings(model_dir=str(model_dir), db=str(db or tmp_path / "serving.db"), **overrides)
        client = TestClient(create_app(settings, make_plugin_manager(load="none")))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()
