"""Core's own plugin (registered as ``core``): the components that ship with ``sigerlm``.

The selective-SSM block ``ssm``, and the test kit's components, so that a manifest runs with
core alone: block ``identity``, adapter ``random-embedding``, dataset ``random-tokens`` and
step ``record-calls``. Factories import torch when they are called, not here.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sigerlm.hookspecs import hookimpl
from sigerlm.testing import components as kit


def _ssm_block(config, layer_idx):
    """The selective state-space block (Mamba order and names)."""
    from sigerlm.model.block import SSMBlock

    return SSMBlock(config, layer_idx)


@hookimpl
def register_blocks(register):
    register("ssm", _ssm_block)
    register("identity", kit.identity_block, options=kit.IdentityBlockOptions)


@hookimpl
def register_adapters(register):
    register("random-embedding", kit.random_embedding, options=kit.RandomEmbeddingOptions)


class TorchRuntimeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threads: int | None = Field(None, ge=1, description="torch threads (default: torch's choice).")


def _torch_runtime(model, threads):
    """Decode with PyTorch: prefill once, then one position at a time from the state."""
    from sigerlm.runtime import TorchRuntime

    return TorchRuntime(model, threads)


@hookimpl
def register_runtimes(register):
    register("torch", _torch_runtime, options=TorchRuntimeOptions)


@hookimpl
def register_datasets(register):
    register("random-tokens", kit.random_tokens, options=kit.RandomTokensOptions)


def _train(run, **options):
    """Train the manifest's model: AdamW, cosine schedule, checkpoints, exact resume, DDP."""
    from sigerlm.training.train import train

    return train(run, **options)


@hookimpl
def register_steps(register):
    from sigerlm.training.options import TrainOptions

    register("train", _train, options=TrainOptions, description=_train.__doc__)
    register("record-calls", kit.record_calls, options=kit.RecordCallsOptions)
