"""Conversion between a SigerLM backbone (plus a tied embedding) and Hugging Face's
``MambaForCausalLM``, in both directions, so people can load SigerLM models with transformers
and the backbone can be checked against an implementation no one here wrote.

The block layouts are the same (Mamba order and names), so conversion renames tensors:
``layers.{i}.*`` <-> ``backbone.layers.{i}.*``, ``norm_f`` <-> ``backbone.norm_f``, the
embedding <-> ``backbone.embeddings`` with ``lm_head`` tied to it. Only what transformers'
Mamba can express converts: RMSNorm, the ``ssm`` block, no dropout at inference.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor

from sigerlm.errors import SigerError
from sigerlm.model.config import SigerConfig


class ConversionError(SigerError):
    """The model uses something the other format cannot express."""


def hf_config(config: SigerConfig, vocab_size: int) -> Any:
    """The ``transformers.MambaConfig`` of a SigerConfig."""
    from transformers import MambaConfig

    if config.norm_type != "rmsnorm":
        raise ConversionError(f"transformers' Mamba uses RMSNorm; this model uses {config.norm_type}")
    if config.block.split(":")[-1] != "ssm":
        raise ConversionError(f"transformers' Mamba has only the ssm block; this model uses '{config.block}'")
    return MambaConfig(
        vocab_size=vocab_size,
        hidden_size=config.d_model,
        state_size=config.d_state,
        num_hidden_layers=config.n_layers,
        layer_norm_epsilon=config.norm_eps,
        conv_kernel=config.d_conv,
        expand=config.expand,
        time_step_rank=config.dt_rank_value,
        time_step_min=config.dt_min,
        time_step_max=config.dt_max,
        time_step_floor=config.dt_init_floor,
        time_step_scale=config.dt_scale,
        use_bias=False,
        use_conv_bias=True,
        hidden_act=config.activation,
        residual_in_fp32=True,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=0,
        eos_token_id=0,
    )


def to_hf(backbone: Any, embedding: Tensor, head: Tensor | None = None) -> Any:
    """A ``MambaForCausalLM`` with the backbone's weights and ``embedding`` as the embedding and
    the head (tied), or ``head`` as a separate LM head."""
    from transformers import MambaForCausalLM

    config: SigerConfig = backbone.config
    hf = hf_config(config, embedding.shape[0])
    hf.tie_word_embeddings = head is None
    model = MambaForCausalLM(hf)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items()}
    state["backbone.embeddings.weight"] = embedding
    state["lm_head.weight"] = embedding if head is None else head
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ConversionError(f"tensors do not match transformers' Mamba: missing {missing}, unexpected {unexpected}")
    if head is None:
        model.lm_head.weight = model.backbone.embeddings.weight
    return model.eval()


def from_hf(model: Any, scan: str = "fused") -> tuple[Any, Tensor]:
    """``(backbone, embedding)`` from a ``MambaForCausalLM``."""
    from sigerlm.model.backbone import Backbone
    from sigerlm.model.checkpoint import load_state

    hf = model.config
    if hf.use_bias or not hf.use_conv_bias:
        raise ConversionError("SigerLM's block has no in/out projection bias and has a conv bias")
    config = SigerConfig(
        d_model=hf.hidden_size,
        n_layers=hf.num_hidden_layers,
        d_state=hf.state_size,
        d_conv=hf.conv_kernel,
        expand=hf.expand,
        dt_rank=hf.time_step_rank,
        norm_eps=hf.layer_norm_epsilon,
        activation=hf.hidden_act,
        norm_type="rmsnorm",
        scan=scan,
    )
    backbone = Backbone(config)
    state = model.state_dict()
    own = {
        k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.") and "embeddings" not in k
    }
    load_state(backbone, own, source="transformers model")
    return backbone, state["backbone.embeddings.weight"].detach().clone()
