"""What exports and what does not: a LoRA-merged folder (equal to the base with its adapter
active), and a model with a module the exporter cannot convert (named, with the reason)."""

import pytest
import torch
from torch import nn


def load(folder):
    from sigerlm.assemble import load_model
    from sigerlm.plugins import make_plugin_manager
    from sigerlm_onnx import hooks as onnx_hooks
    from sigerlm_testkit import add_plugin
    from sigerlm_text import hooks as text_hooks

    pm = make_plugin_manager(load="none")
    add_plugin(pm, text_hooks, "text")
    add_plugin(pm, onnx_hooks, "onnx")
    return load_model(folder, pm), pm


def rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


def test_lora_merged_folder_exports_and_equals_the_adapted_model(model_dir, tmp_path):
    pytest.importorskip("sigerlm_lora")
    from sigerlm_lora import LoraConfig, LoraLinear, add_adapter, merge_and_export, save_adapter

    model, pm = load(model_dir)
    add_adapter(model, "chat", LoraConfig(rank=4, alpha=8))
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a trained adapter: non-zero B
        for module in model.modules():
            if isinstance(module, LoraLinear):
                module.lora_B["chat"].copy_(torch.randn(module.lora_B["chat"].shape, generator=generator))
    merged = merge_and_export(model_dir, save_adapter(model, tmp_path / "adapter", "chat"), tmp_path / "merged")
    merged_model, _ = load(merged)
    options = {"parity_steps": 8, "parity_positions": 50}
    folder = pm.get_component("exporters", "onnx").build(merged_model, tmp_path / "onnx", options=options)
    exported, pm = load(folder)
    ort = pm.get_component("runtimes", "onnxruntime").build(exported, options={"threads": 1})
    ids = torch.randint(0, 300, (2, 15), generator=generator)
    got, _ = ort.prefill({"input_ids": ids})
    with torch.inference_mode():
        want = model.adapter.head(model.forward_hidden(model.adapter.embed({"input_ids": ids}))[:, -1])
        base, _ = load(model_dir)
        before = base.adapter.head(base.forward_hidden(base.adapter.embed({"input_ids": ids}))[:, -1])
    assert rel(got, want) < 1e-4  # the export is the base with the adapter
    assert rel(before, want) > 1e-2  # and the adapter mattered


class BesselBlock(nn.Module):
    """A block whose step uses ``torch.special.i0``, which the ONNX exporter cannot convert."""

    def __init__(self, inner):
        super().__init__()
        self.inner = inner

    def init_state(self, *args, **kwargs):
        return self.inner.init_state(*args, **kwargs)

    def step(self, x, state):
        y, state = self.inner.step(x, state)
        return torch.special.i0(y), state


def test_export_names_the_module_that_cannot_export_and_why(model_dir, tmp_path):
    from sigerlm_onnx.graphs import ExportError

    model, pm = load(model_dir)
    model.backbone.layers[1] = BesselBlock(model.backbone.layers[1])
    with pytest.raises(ExportError, match=r"cannot export backbone\.layers\.1 \(BesselBlock\): .*'aten::i0'"):
        pm.get_component("exporters", "onnx").build(model, tmp_path / "out", options={"parity": False})
    assert not (tmp_path / "out" / "model.onnx").exists()


def test_export_names_a_layer_whose_state_differs(model_dir, tmp_path):
    from sigerlm_onnx.graphs import ExportError

    model, pm = load(model_dir)

    class Wider(BesselBlock):
        def init_state(self, batch_size, *args, **kwargs):
            conv, ssm = self.inner.init_state(batch_size, *args, **kwargs)
            return conv, torch.cat([ssm, ssm], -1)

    model.backbone.layers[1] = Wider(model.backbone.layers[1])
    with pytest.raises(ExportError, match=r"backbone\.layers\.1 \(Wider\): its state .* differs from layer 0"):
        pm.get_component("exporters", "onnx").build(model, tmp_path / "out", options={"parity": False})


def test_moe_blocks_export_with_the_masked_dispatch(tmp_path):
    """sigerlm-moe's block: its grouped dispatch (a stable argsort) is swapped for the masked one
    at export; with trained-like (non-zero) experts the graph equals torch over chained steps."""
    pytest.importorskip("sigerlm_moe")
    from sigerlm.assemble import build_model
    from sigerlm.model.config import SigerConfig
    from sigerlm.plugins import make_plugin_manager
    from sigerlm_moe import hooks as moe_hooks
    from sigerlm_onnx import hooks as onnx_hooks
    from sigerlm_testkit import add_plugin
    from sigerlm_text import hooks as text_hooks

    pm = make_plugin_manager(load="none")
    for module, name in ((text_hooks, "text"), (moe_hooks, "moe"), (onnx_hooks, "onnx")):
        add_plugin(pm, module, name)
    config = SigerConfig.from_profile("tiny")
    torch.manual_seed(0)
    model = build_model(pm, config, {"use": "text", "vocab_size": 300}, [{"use": "moe"}] * config.n_layers).eval()
    with torch.no_grad():  # the experts' output projections start at zero: give them weights
        for name, p in model.named_parameters():
            if "expert" in name:
                p.normal_(0, 0.2)
    assert any(getattr(m, "dispatch", None) is not None for m in model.modules())
    folder = pm.get_component("exporters", "onnx").build(model, tmp_path / "moe", options={"parity": False})
    from sigerlm.runtime import TorchRuntime
    from sigerlm_onnx.runtime import OnnxRuntime

    ort, ref = OnnxRuntime(model, threads=1, folder=folder), TorchRuntime(model)
    ids = torch.randint(0, 300, (3, 9), generator=torch.Generator().manual_seed(0))
    got, got_state = ort.prefill({"input_ids": ids})
    want, want_state = ref.prefill({"input_ids": ids})
    for _ in range(16):
        assert rel(got, want) < 1e-4
        step = want.argmax(-1)
        got, got_state = ort.step({"input_ids": step}, got_state)
        want, want_state = ref.step({"input_ids": step}, want_state)
    import copy

    dense = copy.deepcopy(model)
    with torch.no_grad():
        for name, p in dense.named_parameters():
            if "expert" in name:
                p.zero_()
    assert rel(TorchRuntime(dense).prefill({"input_ids": ids})[0], ref.prefill({"input_ids": ids})[0]) > 1e-2
