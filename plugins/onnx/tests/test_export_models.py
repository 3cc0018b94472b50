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
