"""``POST /v1/translate`` and ``POST /v1/lampung/gloss`` on a FastAPI app of the test's own, with a
stub ``app_state`` (the serving plugin calls the same hook with its own)."""

import types

import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient
from sigerlm_lampung import hooks


def client_for(app_state):
    app = fastapi.FastAPI()
    router = fastapi.APIRouter()
    hooks.register_routes(router=router, app_state=app_state)
    app.include_router(router)
    return TestClient(app)


@pytest.fixture(scope="module")
def state(tiny_data):
    calls = []

    def generate(prompt, **sampling):
        calls.append((prompt, sampling))
        return "jawaban model"

    return types.SimpleNamespace(data_dir=tiny_data, model=object(), generate=generate, calls=calls,
                                 adapters=["lampung"])


def test_translate_a_batch_in_order(state):
    client = client_for(state)
    texts = ["Nyak haga mengan nasi", "Kuyuk ino mak sihat", "zwqxyl qwrtpz"]
    response = client.post("/v1/translate", json={"texts": texts, "source": "abl", "target": "ind"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["source"], body["target"]) == ("abl", "ind")
    out = body["translations"]
    assert [t["stage"] for t in out] == ["exact", "learned", "model"]
    assert out[0]["text"] == "Saya mau makan nasi" and out[1]["text"] == "Anjing itu tidak sehat"
    assert out[2]["text"] == "jawaban model" and out[2]["unknown"] == ["zwqxyl", "qwrtpz"]
    assert all(0 <= t["confidence"] <= 1 for t in out)
    prompt, sampling = state.calls[-1]
    assert "zwqxyl qwrtpz" in prompt and sampling["max_new_tokens"] == 64
    # without the model
    response = client.post("/v1/translate", json={"texts": ["zwqxyl qwrtpz"], "use_model": False})
    assert response.json()["translations"][0]["stage"] == "learned"
    # with one of the server's LoRA adapters on the model
    response = client.post("/v1/translate", json={"texts": ["zwqxyl qwrtpz"], "adapter": "lampung"})
    assert response.status_code == 200 and state.calls[-1][1]["adapter"] == "lampung"
    missing = client.post("/v1/translate", json={"texts": ["zwqxyl"], "adapter": "nope"})
    assert missing.status_code == 422 and "adapter 'nope' is not loaded" in missing.text


def test_english_through_indonesian_and_aliases(state):
    client = client_for(state)
    response = client.post("/v1/translate", json={"texts": ["sanak ino mak sihat"], "source": "lo", "target": "en"})
    assert response.status_code == 200, response.text
    assert response.json()["translations"][0]["text"] == "the child is not healthy"
    # one "direction" field (the serving web page shows its values as a select)
    response = client.post("/v1/translate", json={"texts": ["anak itu tidak sehat"], "direction": "ind-abl"})
    assert response.json()["translations"][0]["text"] == "sanak ino mak sihat"
    assert client.post("/v1/translate", json={"texts": ["x"], "direction": "abl-fra"}).status_code == 422
    schema = client.get("/openapi.json").json()["components"]["schemas"]["TranslateRequest"]["properties"]
    assert schema["direction"]["anyOf"][0]["enum"][:2] == ["abl-ind", "ind-abl"]


def test_gloss(state):
    client = client_for(state)
    response = client.post("/v1/lampung/gloss", json={"text": "Kuyuk ino"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert [w["word"] for w in body["words"]] == ["kuyuk", "ino"]
    assert body["words"][0]["readings"][0]["translation"] == "anjing"
    assert body["translation"]["text"] == "Anjing itu"


def test_bad_requests_are_422(state):
    client = client_for(state)
    assert client.post("/v1/translate", json={"texts": [], "source": "abl", "target": "ind"}).status_code == 422
    bad = client.post("/v1/translate", json={"texts": ["nyak"], "source": "fr", "target": "ind"})
    assert bad.status_code == 422 and "unknown language 'fr'" in bad.text
    same = client.post("/v1/translate", json={"texts": ["nyak"], "source": "abl", "target": "lo"})
    assert same.status_code == 422 and "both abl" in same.text
    assert client.post("/v1/translate", json={"texts": ["nyak"], "sourc": "abl"}).status_code == 422
    assert client.post("/v1/lampung/gloss", json={"text": ""}).status_code == 422


def test_a_server_without_model_or_data_fields(tiny_data, monkeypatch):
    # app_state may lack every optional field: the data folder then comes from SIGER_DATA_DIR
    monkeypatch.setenv("SIGER_DATA_DIR", str(tiny_data))
    client = client_for(types.SimpleNamespace())
    out = client.post("/v1/translate", json={"texts": ["zwqxyl"], "source": "abl", "target": "ind"}).json()
    assert out["translations"][0]["stage"] == "learned"


def test_routes_inside_the_real_server(tiny_data, tmp_path, monkeypatch):
    """With sigerlm-serving installed: the routes mount in its app, behind its checks, and the
    model fallback goes through its ``app_state.generate``."""
    pytest.importorskip("sigerlm_serving")
    import torch
    from sigerlm.model.config import SigerConfig
    from sigerlm.plugins import make_plugin_manager
    from sigerlm.testing import add_plugin
    from sigerlm_serving.app import create_app
    from sigerlm_serving.settings import ServeSettings
    from sigerlm_text import hooks as text_hooks
    from sigerlm_text.model import SigerLM
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    monkeypatch.setenv("SIGER_DATA_DIR", str(tiny_data))
    tok = BPETokenizer.train(["Terjemahkan Lampung O ke Bahasa Indonesia: kuyuk ino"] * 20, vocab_size=300,
                             min_frequency=1)
    torch.manual_seed(0)
    SigerLM(SigerConfig.from_profile("tiny"), 300, tok).save_pretrained(tmp_path / "model")
    pm = make_plugin_manager(load="none")
    add_plugin(pm, text_hooks, "text")
    add_plugin(pm, hooks, "lampung")
    settings = ServeSettings(model_dir=str(tmp_path / "model"), db=str(tmp_path / "serving.db"))
    with TestClient(create_app(settings, pm)) as client:
        response = client.post("/v1/translate", json={"texts": ["Kuyuk ino mak sihat", "zwqxyl"], "direction": "abl-ind"})
        assert response.status_code == 200, response.text
        out = response.json()["translations"]
        assert out[0] == {"text": "Anjing itu tidak sehat", "stage": "learned", "confidence": out[0]["confidence"],
                          "unknown": []}
        assert out[1]["stage"] in {"model", "learned"} and out[1]["text"]  # the server's model answered, or not
        gloss = client.post("/v1/lampung/gloss", json={"text": "kuyuk"})
        assert gloss.status_code == 200 and gloss.json()["words"][0]["readings"][0]["translation"] == "anjing"
        bad = client.post("/v1/translate", json={"texts": ["x"], "source": "fr"})
        assert bad.status_code == 422
