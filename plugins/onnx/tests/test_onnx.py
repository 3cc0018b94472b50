"""Export a tiny model and run it through the registry's ``onnxruntime`` runtime against torch."""

import json
import sys

import pytest
import torch


def plugin_manager_with_onnx():
    from sigerlm.plugins import make_plugin_manager
    from sigerlm_onnx import hooks as onnx_hooks
    from sigerlm_testkit import add_plugin
    from sigerlm_text import hooks as text_hooks

    pm = make_plugin_manager(load="none")
    add_plugin(pm, text_hooks, "text")
    add_plugin(pm, onnx_hooks, "onnx")
    return pm


def load(folder):
    from sigerlm.assemble import load_model

    pm = plugin_manager_with_onnx()
    model = load_model(folder, pm)
    return model, pm


def runtimes(folder):
    model, pm = load(folder)
    ort = pm.get_component("runtimes", "onnxruntime").build(model, options={"threads": 1})
    ref = pm.get_component("runtimes", "torch").build(model, options={"threads": 1})
    return model, ort, ref


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("batch", [1, 3])
def test_fp32_chained_decode_equals_torch(exports, batch):
    model, ort, ref = runtimes(exports["none"])
    assert ort.name == "onnxruntime" and ort.threads == 1
    prompt = torch.randint(0, 300, (batch, 6), generator=torch.Generator().manual_seed(batch))
    got, got_state = ort.prefill({"input_ids": prompt})
    want, want_state = ref.prefill({"input_ids": prompt})
    for _ in range(64):
        assert rel(got, want) < 1e-4
        ids = want.argmax(-1)
        assert torch.equal(got.argmax(-1), ids)  # greedy tokens identical
        got, got_state = ort.step({"input_ids": got.argmax(-1)}, got_state)
        want, want_state = ref.step({"input_ids": ids}, want_state)


def test_prefill_length_is_dynamic_on_one_graph(exports):
    model, ort, ref = runtimes(exports["none"])
    gen = torch.Generator().manual_seed(0)
    for length in (1, 7, 128, 1000):
        ids = torch.randint(0, 300, (2, length), generator=gen)
        got, state = ort.prefill({"input_ids": ids})
        want, want_state = ref.prefill({"input_ids": ids})
        assert rel(got, want) < 1e-4, length
        ssm = torch.stack([s[1] for s in want_state])  # (L, b, d_inner, n)
        torch.testing.assert_close(torch.from_numpy(state[1]), ssm, atol=1e-4, rtol=1e-4)
    # the state carries on: prefill in two parts equals one
    ids = torch.randint(0, 300, (1, 20), generator=gen)
    _, first = ort.prefill({"input_ids": ids[:, :12]})
    split, _ = ort.prefill({"input_ids": ids[:, 12:]}, first)
    whole, _ = ort.prefill({"input_ids": ids})
    torch.testing.assert_close(split, whole, atol=1e-5, rtol=1e-5)


def test_score_stack_and_select_rows(exports):
    model, ort, ref = runtimes(exports["none"])
    ids = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(3))
    got, _ = ort.score({"input_ids": ids})
    want, _ = ref.score({"input_ids": ids})
    assert got.shape == want.shape == (2, 9, 300) and rel(got, want) < 1e-4
    _, a = ort.prefill({"input_ids": ids[:1]})
    _, b = ort.prefill({"input_ids": ids[1:]})
    both = ort.stack_states([a, b])
    assert both[0].shape[1] == 2
    picked = ort.select_rows(both, torch.tensor([1]))
    step_ids = torch.tensor([5])
    torch.testing.assert_close(ort.step({"input_ids": step_ids}, picked)[0], ort.step({"input_ids": step_ids}, b)[0])
    assert ort.init_state(4)[1].shape == (2, 4, 32, 4)


def test_export_metadata_and_parity_report(exports, model_dir):
    folder = exports["none"]
    meta = json.loads((folder / "config.json").read_text())["onnx"]
    source = json.loads((model_dir / "config.json").read_text())
    assert meta["source"]["identity"] == source["identity"]
    assert meta["source"]["tokenizer_hash"] == source["tokenizer_hash"]
    assert meta["opset"] == 17 and meta["quantization"] == {"method": "none"}
    import onnxruntime

    assert meta["onnxruntime"] == onnxruntime.__version__
    assert (folder / "tokenizer.json").is_file() and (folder / "model.onnx").is_file()
    report = json.loads((folder / "parity.json").read_text())
    assert report["batch1_greedy_identical"] and report["batch3_greedy_identical"]
    assert report["batch1_max_rel_logit_error"] < 1e-4 and report["top1_agreement"] == 1.0


@pytest.mark.parametrize("quantize", ["int8", "int4"])
def test_quantized_exports(exports, quantize):
    import onnx

    folder = exports[quantize]
    meta = json.loads((folder / "config.json").read_text())["onnx"]
    ops = {n.op_type for n in onnx.load(str(folder / "model.onnx")).graph.node}
    body = next(n for n in onnx.load(str(folder / "model.onnx")).graph.node if n.op_type == "Loop")
    body_ops = {n.op_type for n in body.attribute[0].g.node}
    report = json.loads((folder / "parity.json").read_text())
    if quantize == "int8":
        from sigerlm_onnx.quantize import int8_reduce_range

        assert meta["quantization"]["reduce_range"] == int8_reduce_range()[0]
        assert "DynamicQuantizeLinear" in ops | body_ops and "MatMulInteger" in ops | body_ops
        assert report["top1_agreement"] > 0.9
        assert meta["quantization"]["embedding"] == "int8, a scale per row"
    else:
        assert meta["quantization"]["op"] == "MatMulNBits" and meta["quantization"]["gemm_rewritten"] == 2
        assert "MatMulNBits" in ops and "MatMulNBits" in body_ops and "Gemm" not in body_ops  # the tied head too
        assert "GatherBlockQuantized" in body_ops  # the embedding lookup
    # no fp32 copy of the (v, d) embedding table is left: the lookup and the tied head are quantized
    graph = onnx.load(str(folder / "model.onnx")).graph
    tables = [i for i in [*graph.initializer, *body.attribute[0].g.initializer] if {300, 16} <= set(i.dims)]
    assert tables and all(t.data_type != onnx.TensorProto.FLOAT for t in tables), [t.name for t in tables]
    assert report["positions"] == 200 and 0.9 < report["perplexity_ratio"] < 1.1
    model, ort, ref = runtimes(folder)
    ids = torch.randint(0, 300, (1, 30), generator=torch.Generator().manual_seed(0))
    got, _ = ort.prefill({"input_ids": ids})
    want, _ = ref.prefill({"input_ids": ids})
    assert got.shape == want.shape and torch.isfinite(got).all()


def test_embedding_quantization_error_is_small_and_optional(model_dir, tmp_path):
    """The int8 per-row table reproduces the fp32 lookup within half a step of each row's scale;
    ``quantize_embedding: false`` keeps the fp32 table (and the graph is larger)."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    from sigerlm_onnx.graphs import export_graphs
    from sigerlm_onnx.quantize import embedding_gathers, quantize_gather_int8

    model, pm = load(model_dir)
    body = export_graphs(model, 17)["body"]
    (gather,) = embedding_gathers(body)
    table = numpy_helper.to_array(next(i for i in body.graph.initializer if i.name == gather.input[0]))
    assert quantize_gather_int8(body) == 1 and not embedding_gathers(body)
    inits = {i.name: numpy_helper.to_array(i) for i in body.graph.initializer}
    q, scale = inits[gather.input[0] + "/int8"], inits[gather.input[0] + "/row_scale"]
    assert q.dtype == np.int8 and scale.shape == (300, 1)
    assert np.all(np.abs(q * scale - table) <= scale / 2 + 1e-7)
    options = {"quantize": "int8", "quantize_embedding": False, "parity": False}
    folder = pm.get_component("exporters", "onnx").build(model, tmp_path / "fp32-table", options=options)
    meta = json.loads((folder / "config.json").read_text())["onnx"]
    assert meta["quantization"]["embedding"] == "fp32"
    graph = onnx.load(str(folder / "model.onnx")).graph
    assert any(list(i.dims) == [300, 16] and i.data_type == onnx.TensorProto.FLOAT for i in graph.initializer)


def test_reduce_range_follows_vnni():
    from sigerlm_onnx.quantize import int8_reduce_range

    assert int8_reduce_range({"avx2", "fma"})[0] is True
    assert int8_reduce_range({"avx2", "avx512f", "avx512_vnni"})[0] is False
    assert int8_reduce_range({"avx2", "avx_vnni"})[0] is False


def test_errors_name_the_problem(exports, model_dir, tmp_path, monkeypatch):
    import shutil

    from sigerlm_onnx.runtime import OnnxRuntimeError

    def copy(name):
        target = tmp_path / name
        shutil.copytree(exports["none"], target)
        return target

    def build(folder):
        model, pm = load(folder)
        return pm.get_component("runtimes", "onnxruntime").build(model, options={})

    corrupt = copy("corrupt")
    data = (corrupt / "model.onnx").read_bytes()
    (corrupt / "model.onnx").write_bytes(data[: len(data) // 3])
    with pytest.raises(OnnxRuntimeError, match="corrupt: not a readable ONNX graph"):
        build(corrupt)

    foreign = copy("foreign")
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "other",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    onnx.save(helper.make_model(graph), str(foreign / "model.onnx"))
    with pytest.raises(OnnxRuntimeError, match="a foreign ONNX graph"):
        build(foreign)

    newer = copy("newer")
    from sigerlm_onnx.runtime import sha256

    proto = onnx.load(str(newer / "model.onnx"))
    for opset in proto.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = 99
    onnx.save(proto, str(newer / "model.onnx"))
    config = json.loads((newer / "config.json").read_text())
    config["onnx"]["sha256"], config["onnx"]["opset"] = sha256(newer / "model.onnx"), 99
    (newer / "config.json").write_text(json.dumps(config))
    with pytest.raises(OnnxRuntimeError, match="exported with opset 99, which onnxruntime .* cannot run"):
        build(newer)

    other_tokenizer = copy("tokenizer")
    config = json.loads((other_tokenizer / "config.json").read_text())
    config["onnx"]["source"]["tokenizer_hash"] = "0" * 64
    (other_tokenizer / "config.json").write_text(json.dumps(config))
    with pytest.raises(OnnxRuntimeError, match="is not the one the graph was exported with"):
        build(other_tokenizer)

    with pytest.raises(OnnxRuntimeError, match="not an ONNX export"):
        build(model_dir)

    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(OnnxRuntimeError, match="needs the onnxruntime package"):
        build(exports["none"])
