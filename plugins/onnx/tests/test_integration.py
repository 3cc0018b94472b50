"""An exported folder through the callers that take ``--runtime onnxruntime``: ``siger
generate`` (a subprocess, as a user runs it) and the server's OpenAI-compatible endpoint."""

import json
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


@pytest.mark.parametrize(
    "quantize", [pytest.param("none", marks=pytest.mark.slow), "int8", pytest.param("int4", marks=pytest.mark.slow)]
)
def test_openai_endpoint_through_onnxruntime(exports, tmp_path, quantize):
    from fastapi.testclient import TestClient

    from sigerlm.plugins import make_plugin_manager
    from sigerlm_onnx import hooks as onnx_hooks
    from sigerlm_serving.app import create_app
    from sigerlm_serving.settings import ServeSettings
    from sigerlm_testkit import add_plugin

    pm = make_plugin_manager(load="none")
    add_plugin(pm, onnx_hooks, "onnx")
    settings = ServeSettings(model_dir=str(exports[quantize]), db=str(tmp_path / "s.db"), runtime="onnxruntime")
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


def test_lampung_model_fallback_decodes_through_onnxruntime(exports, model_dir):
    """The Lampung translator's model fallback (``model_generate``) on an exported folder: the
    fp32 export answers what torch answers on the source folder."""
    pytest.importorskip("sigerlm_lampung")
    from sigerlm_lampung.service import model_generate

    got = model_generate(exports["none"], max_new_tokens=8, runtime="onnxruntime")
    want = model_generate(model_dir, max_new_tokens=8, runtime="torch")
    for prompt in ("Tabik pun", "Saya mau makan"):
        assert got(prompt) == want(prompt)


def test_eval_generation_step_on_an_exported_folder(exports, model_dir, tmp_path):
    """A manifest whose model is the export (``init_from``) runs ``eval-generation`` with
    ``runtime: onnxruntime``; its predictions equal the torch runtime's."""
    from sigerlm.plugins import make_plugin_manager
    from sigerlm_onnx import hooks as onnx_hooks
    from sigerlm_testkit import add_plugin, run_manifest_with
    from sigerlm_text import hooks as text_hooks

    pm = make_plugin_manager(load="none")
    add_plugin(pm, text_hooks, "text")
    add_plugin(pm, onnx_hooks, "onnx")
    rows = ['{"a": "Saya mau makan", "b": "I want to eat"}', '{"a": "Tabik pun", "b": "Hello"}']
    (tmp_path / "pairs.jsonl").write_text("\n".join(rows) + "\n")
    step = {"use": "eval-generation", "files": [str(tmp_path / "pairs.jsonl")], "max_new_tokens": 5}
    step["templates"] = [{"instruction": "Translate: {a}", "output": "{b}"}]
    predictions = {}
    for runtime in ("onnxruntime", "torch"):
        manifest = {
            "siger": 1,
            "name": runtime,
            "model": {"init_from": str(exports["none"])},
            "steps": [dict(step, runtime=runtime)],
        }
        run_manifest_with(pm, manifest, tmp_path / runtime)
        lines = (tmp_path / runtime / "eval.predictions.jsonl").read_text().splitlines()
        predictions[runtime] = [json.loads(line)["prediction"] for line in lines]
    assert len(predictions["onnxruntime"]) == 2 and all(predictions["onnxruntime"])
    assert predictions["onnxruntime"] == predictions["torch"]
