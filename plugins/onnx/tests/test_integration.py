"""An exported folder through the callers that take ``--runtime onnxruntime``: ``siger
generate`` (a subprocess, as a user runs it) and the server's OpenAI-compatible endpoint."""

import os
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "quantize", ["none", pytest.param("int8", marks=pytest.mark.slow), pytest.param("int4", marks=pytest.mark.slow)]
)
def test_siger_generate_runtime_onnxruntime(exports, model_dir, quantize):
    def generate(folder, runtime):
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        code = "from sigerlm.cli import main; main()"
        args = [str(folder), "Tabik pun", "--max-new-tokens", "12", "--runtime", runtime, "--threads", "1"]
        done = subprocess.run(
            [sys.executable, "-c", code, "generate", *args], capture_output=True, text=True, env=env, timeout=120
        )
        assert done.returncode == 0, done.stderr
        return done.stdout

    got = generate(exports[quantize], "onnxruntime")
    assert got.strip()
    if quantize == "none":  # fp32: the same greedy text as torch
        assert got == generate(model_dir, "torch")


def test_openai_endpoint_through_onnxruntime(exports, tmp_path):
    from fastapi.testclient import TestClient

    from sigerlm.plugins import make_plugin_manager
    from sigerlm.testing import add_plugin
    from sigerlm_onnx import hooks as onnx_hooks
    from sigerlm_serving.app import create_app
    from sigerlm_serving.settings import ServeSettings

    pm = make_plugin_manager(load="none")
    add_plugin(pm, onnx_hooks, "onnx")
    settings = ServeSettings(model_dir=str(exports["int8"]), db=str(tmp_path / "s.db"), runtime="onnxruntime")
    with TestClient(create_app(settings, pm)) as client:
        r = client.post(
            "/v1/chat/completions",
            json={"model": "SIGER", "max_tokens": 6, "messages": [{"role": "user", "content": "Tabik pun"}]},
        )
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["object"] == "chat.completion" and body["usage"]["completion_tokens"] <= 6
        prompts = [{"model": "SIGER", "prompt": p, "max_tokens": 5} for p in ("Saya", "Halo, apa", "I want")]
        for request in prompts:  # one after another through the shared decode batch
            r = client.post("/v1/completions", json=request)
            assert r.status_code == 200 and r.json()["object"] == "text_completion", r.text
        info = client.get("/v1/status")
        assert info.status_code == 200, info.text
        assert info.json()["runtime"]["name"] == "onnxruntime"  # the server decoded through the export
