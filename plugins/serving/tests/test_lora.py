"""LoRA adapters (when sigerlm-lora is installed): `adapter` in requests picks one; rows of
different adapters never share a decode step; unknown adapters get 422."""

import pytest
import torch

pytest.importorskip("sigerlm_lora")


@pytest.fixture(scope="module")
def adapter_dir(model_dir, tmp_path_factory):
    from sigerlm_lora import add_adapter, save_adapter
    from sigerlm_text.model import load_text_model

    model = load_text_model(model_dir)
    add_adapter(model, "tuned")
    torch.manual_seed(1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)  # a non-zero adapter changes the outputs
    return save_adapter(model, tmp_path_factory.mktemp("adapter") / "tuned", "tuned")


def expected(model_dir, adapter_dir, prompt, n):
    from sigerlm.runtime import TorchRuntime
    from sigerlm_lora import load_adapter
    from sigerlm_text.generation import Generator
    from sigerlm_text.model import load_text_model

    model = load_text_model(model_dir)
    base = Generator(TorchRuntime(model), model.adapter.tokenizer).generate(prompt, max_new_tokens=n).text
    load_adapter(model, adapter_dir)
    tuned = Generator(TorchRuntime(model), model.adapter.tokenizer).generate(prompt, max_new_tokens=n).text
    return base, tuned


def test_requests_pick_their_adapter(make_client, model_dir, adapter_dir):
    client = make_client(adapters={"tuned": str(adapter_dir)})
    assert client.get("/v1/status").json()["adapters"] == ["tuned"]
    assert [m["id"] for m in client.get("/v1/models").json()["data"]] == ["SIGER", "SIGER:tuned"]
    base, tuned = expected(model_dir, adapter_dir, "Saya mau makan", 16)
    assert base != tuned
    import concurrent.futures as cf

    bodies = [
        {"prompt": "Saya mau makan", "max_new_tokens": 16, **({"adapter": "tuned"} if i % 2 else {})} for i in range(8)
    ]
    with cf.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda b: client.post("/v1/generate", json=b).json(), bodies))
    for body, answer in zip(bodies, answers, strict=True):
        assert answer["text"] == (tuned if "adapter" in body else base)
        assert answer["adapter"] == body.get("adapter")
    r = client.post("/v1/completions", json={"model": "SIGER:tuned", "prompt": "Saya mau makan", "max_tokens": 16})
    assert r.json()["choices"][0]["text"] == tuned
    sid = client.post("/v1/sessions", json={"adapter": "tuned"}).json()["id"]
    assert (
        client.post("/v1/chat", json={"session_id": sid, "message": "x", "max_new_tokens": 2}).json()["adapter"]
        == "tuned"
    )
    r = client.post("/v1/generate", json={"prompt": "x", "adapter": "other"})
    assert r.status_code == 422 and r.json()["error"]["code"] == "unknown_adapter"
