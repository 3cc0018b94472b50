"""LoRA layers, adapter files, switching and merging on a tiny text model."""

import json

import pytest
import torch
from torch import nn

from sigerlm_lora import (
    LoraConfig,
    LoraError,
    LoraLinear,
    active_adapter,
    adapter_names,
    add_adapter,
    base_hash,
    load_adapter,
    merge_adapter,
    merge_and_export,
    save_adapter,
    set_adapter,
    train_only,
)
from sigerlm_text.model import lm_forward, load_text_model


def load(folder):
    return load_text_model(folder)


def randomize(model, name, scale=0.5, seed=0):
    """Give an adapter non-zero B (as training would), so it changes outputs."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, LoraLinear) and name in module.lora_B:
                b = module.lora_B[name]
                b.copy_(torch.randn(b.shape, generator=g) * scale)


def ids(seed=0, batch=2, length=12):
    return torch.randint(0, 300, (batch, length), generator=torch.Generator().manual_seed(seed))


def test_default_targets_wrap_mamba_projections_and_keep_base_names(base_dir):
    model = load(base_dir)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = ids()
    reference = lm_forward(model, x).logits
    info = add_adapter(model, "chat", LoraConfig(rank=4, alpha=8))
    wrapped = {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, LoraLinear)}
    assert wrapped == {"in_proj", "out_proj", "x_proj", "dt_proj"}
    assert len(info.modules) == 4 * model.config.n_layers
    state = model.state_dict()
    assert set(before) <= set(state)  # the base tensors keep their names: a base checkpoint still loads
    assert all(".lora_A." in k or ".lora_B." in k for k in set(state) - set(before))
    # B starts at zero: a new adapter changes nothing
    assert torch.equal(lm_forward(model, x).logits, reference)
    trainable, total = train_only(model, "chat")
    expected = sum(4 * (m.in_features + m.out_features) for m in model.modules() if isinstance(m, LoraLinear))
    assert trainable == expected and total == expected + sum(v.numel() for v in before.values())
    assert {n for n, p in model.named_parameters() if p.requires_grad} == {n for n in state if ".lora_" in n}


def test_targets_by_pattern_and_unknown_target_error(base_dir):
    model = load(base_dir)
    info = add_adapter(model, "first", LoraConfig(rank=2, targets=["backbone.layers.0.*"]))
    assert info.modules and all(m.startswith("backbone.layers.0.") for m in info.modules)
    with pytest.raises(LoraError, match=r"no nn.Linear module matches the LoRA targets \['q_proj'\].*in_proj"):
        add_adapter(load(base_dir), "x", LoraConfig(targets=["q_proj"]))
    with pytest.raises(LoraError, match="already has an adapter named 'first'"):
        add_adapter(model, "first")


def test_works_on_a_plugin_block_by_module_name(plugin_manager, tiny_config):
    """A third-party block with its own linear layer names is adapted by name."""
    from sigerlm import hookimpl
    from sigerlm.model.backbone import Backbone
    from sigerlm_testkit import add_plugin

    class MixBlock(nn.Module):
        def __init__(self, config, layer_idx):
            super().__init__()
            self.mix = nn.Linear(config.d_model, config.d_model)

        def forward(self, hidden_states, state=None, return_state=False):
            out = hidden_states + torch.tanh(self.mix(hidden_states))
            return (out, ()) if return_state else out

        def init_state(self, batch_size, device=None, dtype=None):
            return ()

    class Plugin:
        @hookimpl
        def register_blocks(self, register):
            register("mix", lambda config, layer_idx, options: MixBlock(config, layer_idx))

    add_plugin(plugin_manager, Plugin(), "mixer")
    block = plugin_manager.get_component("blocks", "mix")
    backbone = Backbone(tiny_config, lambda cfg, i: block.build(cfg, i))
    x = torch.randn(2, 5, tiny_config.d_model)
    reference = backbone.forward_hidden(x)
    info = add_adapter(backbone, "default", LoraConfig(rank=2, targets=["mix"]))
    assert len(info.modules) == tiny_config.n_layers
    randomize(backbone, "default")
    assert not torch.allclose(backbone.forward_hidden(x), reference)
    set_adapter(backbone, None)
    assert torch.equal(backbone.forward_hidden(x), reference)


def test_switching_adapters_in_one_process(base_dir, tmp_path):
    trained = load(base_dir)
    add_adapter(trained, "chat", LoraConfig(rank=4))
    randomize(trained, "chat", seed=1)
    save_adapter(trained, tmp_path / "chat", "chat")
    add_adapter(trained, "lampung", LoraConfig(rank=2, targets=["in_proj", "out_proj"]))
    randomize(trained, "lampung", seed=2)
    save_adapter(trained, tmp_path / "lampung", "lampung")

    model = load(base_dir)  # one base, two adapters loaded from their folders
    x = ids(3)
    base_out = lm_forward(model, x).logits
    assert load_adapter(model, tmp_path / "chat") == "chat"
    assert load_adapter(model, tmp_path / "lampung") == "lampung"
    assert adapter_names(model) == ["chat", "lampung"] and active_adapter(model) == "lampung"
    outputs = {}
    for name in ("chat", "lampung", None):
        set_adapter(model, name)
        outputs[name] = lm_forward(model, x).logits
    assert torch.equal(outputs[None], base_out)
    assert not torch.allclose(outputs["chat"], outputs["lampung"], atol=1e-4)
    assert not torch.allclose(outputs["chat"], base_out, atol=1e-4)
    for name in ("lampung", "chat", None, "chat"):  # switching back restores outputs exactly
        set_adapter(model, name)
        assert torch.equal(lm_forward(model, x).logits, outputs[name])
    # the decode path (step) sees the active adapter too
    set_adapter(model, "chat")
    state = model.init_state(2)
    logits, _ = model.step({"input_ids": x[:, 0]}, state)
    assert torch.allclose(logits, outputs["chat"][:, 0], atol=1e-5)
    with pytest.raises(LoraError, match="no adapter named 'general'"):
        set_adapter(model, "general")


def test_adapter_on_another_base_is_refused(base_dir, other_base_dir, tmp_path):
    model = load(base_dir)
    add_adapter(model, "chat", LoraConfig(rank=2))
    randomize(model, "chat")
    folder = save_adapter(model, tmp_path / "chat", "chat", base_folder=base_dir)
    meta = json.loads((folder / "adapter_config.json").read_text())
    assert meta["base_hash"] == base_hash(load(base_dir)) and meta["rank"] == 2 and meta["base_model"] == str(base_dir)
    with pytest.raises(LoraError, match=r"was trained on base [0-9a-f]{12} .*but this model's base is [0-9a-f]{12}"):
        load_adapter(load(other_base_dir), folder)
    with pytest.raises(LoraError, match="but the base folder .* is"):
        merge_and_export(other_base_dir, folder, tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_damaged_adapter_folders_are_named(base_dir, tmp_path):
    model = load(base_dir)
    add_adapter(model, "chat", LoraConfig(rank=2))
    folder = save_adapter(model, tmp_path / "chat", "chat")
    weights = folder / "adapter.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) - 64])
    with pytest.raises(Exception, match="truncated: tensor '.*lora_[AB]'"):
        load_adapter(load(base_dir), folder)
    with pytest.raises(LoraError, match="not a LoRA adapter folder"):
        load_adapter(load(base_dir), tmp_path)


def test_merge_equals_unmerged_model(base_dir, tmp_path):
    model = load(base_dir)
    add_adapter(model, "lampung", LoraConfig(rank=4, alpha=8))
    randomize(model, "lampung", scale=1.0)
    adapter = save_adapter(model, tmp_path / "adapter", "lampung")
    out = merge_and_export(base_dir, adapter, tmp_path / "merged")
    merged = load(out)  # a plain model folder: SigerLM loads it with no LoRA code involved
    assert not any(isinstance(m, LoraLinear) for m in merged.modules())
    assert (out / "tokenizer.json").is_file() and (out / "merged_adapter.json").is_file()
    x = ids(5, batch=3, length=20)
    unmerged = lm_forward(model, x).logits
    diff = (lm_forward(merged, x).logits - unmerged).abs().max().item()
    assert diff <= 1e-5, diff
    assert (unmerged - lm_forward(load(base_dir), x).logits).abs().max().item() > 1e-3  # the adapter mattered
    # merging in place gives the same weights as the exported folder
    merge_adapter(model, "lampung")
    pairs = zip(model.state_dict().values(), merged.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_siger_lora_merge_and_info_commands(base_dir, tmp_path, capsys):
    from sigerlm.cli import main

    model = load(base_dir)
    add_adapter(model, "chat", LoraConfig(rank=2))
    randomize(model, "chat")
    adapter = save_adapter(model, tmp_path / "chat", "chat")

    def siger(*args):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = exc.code or 0
        out = capsys.readouterr()
        return code, out.out + out.err

    code, output = siger("lora", "merge", base_dir, adapter, "--out", tmp_path / "m")
    assert code == 0, output
    x = ids()
    assert (lm_forward(load(tmp_path / "m"), x).logits - lm_forward(model, x).logits).abs().max().item() <= 1e-5
    code, output = siger("lora", "merge", base_dir, adapter, "--out", tmp_path / "m")
    assert code != 0 and "already holds files: siger never replaces them" in output
    code, output = siger("lora", "info", adapter, "--json")
    assert code == 0, output
    info = json.loads(output)
    assert info["rank"] == 2 and info["parameters"] == sum(
        2 * (m.in_features + m.out_features) for m in model.modules() if isinstance(m, LoraLinear)
    )
