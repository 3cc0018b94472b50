"""Core's own plugin (registered as ``core``): the components that ship with ``sigerlm``.

The selective-SSM block ``ssm``, the ``torch`` runtime and the ``train`` step. Factories import
torch when they are called, not here. (The test kit's dummy components are registered by the
test kit's fixtures only: ``sigerlm_testkit``.)
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from sigerlm.hookspecs import hookimpl
from sigerlm.registry import NoOptions
from sigerlm.training.options import TrainOptions


def ssm(config, layer_idx, options: NoOptions):
    """The selective state-space block (Mamba order and names)."""
    from sigerlm.model.block import SSMBlock

    return SSMBlock(config, layer_idx)


class TorchRuntimeOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    threads: int | None = Field(None, ge=1, description="torch threads (default: torch's choice).")
    prefill_chunk: int = Field(512, ge=1, description="Positions prefilled at a time (bounds prefill memory).")


def torch_runtime(model, options: TorchRuntimeOptions):
    """Decode with PyTorch: prefill once, then one position at a time from the state."""
    from sigerlm.runtime import TorchRuntime

    return TorchRuntime(model, options.threads, options.prefill_chunk)


def train(run, options: TrainOptions):
    """Train the manifest's model: AdamW, cosine schedule, checkpoints, exact resume, DDP."""
    from sigerlm.training.train import train as train_step

    return train_step(run, options)


@hookimpl
def register_blocks(register):
    register("ssm", ssm)


@hookimpl
def register_runtimes(register):
    register("torch", torch_runtime, options=TorchRuntimeOptions)


@hookimpl
def register_steps(register):
    register("train", train, options=TrainOptions)
