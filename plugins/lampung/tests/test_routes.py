"""``POST /v1/translate`` and ``POST /v1/lampung/gloss`` on a FastAPI app of the test's own, with a
stub ``app_state`` (the serving plugin calls the same hook with its own)."""

import types

import pytest

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402 - only when fastapi is installed

from sigerlm_lampung import hooks  # noqa: E402


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

    return types.SimpleNamespace(
        data_dir=tiny_data, model=object(), generate=generate, calls=calls, adapters=["lampung"]
    )


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
    from sigerlm_serving.app import create_app
    from sigerlm_serving.settings import ServeSettings
    from sigerlm_testkit import add_plugin
    from sigerlm_text import hooks as text_hooks
    from sigerlm_text.model import text_model
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    monkeypatch.setenv("SIGER_DATA_DIR", str(tiny_data))
    tok = BPETokenizer.train(
        ["Terjemahkan Lampung O ke Bahasa Indonesia: kuyuk ino"] * 20, vocab_size=300, min_frequency=1
    )
    torch.manual_seed(0)
    text_model(SigerConfig.from_profile("tiny"), 300, tok).save_pretrained(tmp_path / "model")
    pm = make_plugin_manager(load="none")
    add_plugin(pm, text_hooks, "text")
    add_plugin(pm, hooks, "lampung")
    settings = ServeSettings(model_dir=str(tmp_path / "model"), db=str(tmp_path / "serving.db"))
    with TestClient(create_app(settings, pm)) as client:
        response = client.post(
            "/v1/translate", json={"texts": ["Kuyuk ino mak sihat", "zwqxyl"], "direction": "abl-ind"}
        )
        assert response.status_code == 200, response.text
        out = response.json()["translations"]
        assert out[0] == {
            "text": "Anjing itu tidak sehat",
            "stage": "learned",
            "confidence": out[0]["confidence"],
            "unknown": [],
        }
        assert out[1]["stage"] in {"model", "learned"} and out[1]["text"]  # the server's model answered, or not
        gloss = client.post("/v1/lampung/gloss", json={"text": "kuyuk"})
        assert gloss.status_code == 200 and gloss.json()["words"][0]["readings"][0]["translation"] == "anjing"
        bad = client.post("/v1/translate", json={"texts": ["x"], "source": "fr"})
        assert bad.status_code == 422


def test_the_work_of_one_request_is_bounded(state):
    from sigerlm_lampung.routes import MAX_CHARS, MAX_TEXTS, MAX_TOTAL_CHARS

    client = client_for(state)
    assert MAX_TOTAL_CHARS < MAX_TEXTS * MAX_CHARS  # the total is the bound, not texts x their own limit
    texts = ["nyak haga mengan " * 230] * 3  # 3 x 3910 characters: each text fits, together they do not
    r = client.post("/v1/translate", json={"texts": texts, "direction": "abl-ind", "use_model": False})
    assert r.status_code == 422 and f"at most {MAX_TOTAL_CHARS}" in r.text
    r = client.post("/v1/translate", json={"texts": ["nyak"] * (MAX_TEXTS + 1)})
    assert r.status_code == 422
    assert client.post("/v1/translate", json={"texts": ["nyak"], "use_model": "yes"}).status_code == 422


def test_a_client_that_disconnects_stops_the_rest_of_its_translations(state, monkeypatch):
    import threading
    import time

    import httpx
    import uvicorn

    from sigerlm_lampung.translator import Translator

    done, real = [], Translator.translate

    def slow(self, text, *args, **kwargs):
        time.sleep(0.2)
        done.append(text)
        return real(self, text, *args, **kwargs)

    monkeypatch.setattr(Translator, "translate", slow)
    app = fastapi.FastAPI()
    router = fastapi.APIRouter()
    hooks.register_routes(router=router, app_state=state)
    app.include_router(router)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 30
        while not server.started and time.monotonic() < deadline:
            time.sleep(0.05)
        body = {"texts": [f"nyak haga mengan {i}" for i in range(40)], "direction": "abl-ind", "use_model": False}
        with pytest.raises(httpx.ReadTimeout):  # the client gives up after about 2 translations
            httpx.post(f"http://127.0.0.1:{port}/v1/translate", json=body, timeout=0.5)
        previous = -1
        while len(done) != previous:  # wait until the server has stopped translating
            previous = len(done)
            time.sleep(0.6)
        assert len(done) < 10, f"{len(done)} of 40 texts translated after the client left"
    finally:
        server.should_exit = True
        thread.join(30)


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_translations_count_against_the_servers_per_key_limit(tiny_data, tmp_path, monkeypatch):
    pytest.importorskip("sigerlm_serving")
    import torch

    from sigerlm.model.config import SigerConfig
    from sigerlm.plugins import make_plugin_manager
    from sigerlm_serving.app import create_app
    from sigerlm_serving.service import key_id
    from sigerlm_serving.settings import ServeSettings
    from sigerlm_testkit import add_plugin
    from sigerlm_text import hooks as text_hooks
    from sigerlm_text.model import text_model
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    monkeypatch.setenv("SIGER_DATA_DIR", str(tiny_data))
    tok = BPETokenizer.train(["Terjemahkan kuyuk ino"] * 20, vocab_size=300, min_frequency=1)
    torch.manual_seed(0)
    text_model(SigerConfig.from_profile("tiny"), 300, tok).save_pretrained(tmp_path / "model")
    pm = make_plugin_manager(load="none")
    add_plugin(pm, text_hooks, "text")
    add_plugin(pm, hooks, "lampung")
    settings = ServeSettings(
        model_dir=str(tmp_path / "model"), db=str(tmp_path / "s.db"), api_keys=["k1", "k2"], max_streams_per_key=1
    )
    with TestClient(create_app(settings, pm)) as client:
        body = {"texts": ["Kuyuk ino"], "direction": "abl-ind", "use_model": False}
        with client.app.state.siger.stream_slot(key_id("k1")):  # one generation of k1 runs
            busy = client.post("/v1/translate", json=body, headers={"X-Siger-API-Key": "k1"})
            assert busy.status_code == 429 and busy.json()["error"]["code"] == "too_many_streams"
            gloss = client.post("/v1/lampung/gloss", json={"text": "kuyuk"}, headers={"X-Siger-API-Key": "k1"})
            assert gloss.status_code == 429
            assert client.post("/v1/translate", json=body, headers={"X-Siger-API-Key": "k2"}).status_code == 200
        assert client.post("/v1/translate", json=body, headers={"X-Siger-API-Key": "k1"}).status_code == 200
