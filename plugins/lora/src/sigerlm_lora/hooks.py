"""Hook implementations of sigerlm-lora (entry point ``lora``).

Keep this module light: every ``siger`` call imports it. torch is imported by the factories.
"""

from __future__ import annotations

import logging

from sigerlm import hookimpl
from sigerlm_lora.options import LoraOptions

log = logging.getLogger("sigerlm.lora")


def lora(model, options: LoraOptions):
    """Add a LoRA adapter to the model's linear layers (or continue one) and freeze the rest.

    The train step then optimizes only the adapter, checkpoints only its tensors, and saves
    an adapter folder (``adapter.safetensors`` + ``adapter_config.json``) as its model.
    """
    from sigerlm_lora.files import load_adapter, save_adapter
    from sigerlm_lora.lora import LoraConfig, add_adapter, train_only

    rank, alpha, dropout, targets = options.rank, options.alpha, options.dropout, options.targets
    name, adapter = options.name, options.adapter
    if adapter is not None:
        load_adapter(model, adapter, name, trainable=True)
    else:
        add_adapter(model, name, LoraConfig(rank=rank, alpha=alpha, dropout=dropout, targets=list(targets)))
    trainable, total = train_only(model, name)
    log.info(
        "LoRA adapter '%s' (rank %d, alpha %g): %d trainable parameters of %d (%.2f%%)",
        name,
        rank,
        alpha,
        trainable,
        total,
        100 * trainable / max(total, 1),
    )
    if hasattr(model, "saver"):  # the train step's model: save the adapter, not the whole model

        def saver(folder, plugins=None):
            return save_adapter(model, folder, name, base_folder=model.source, plugins=plugins)

        model.saver = saver
    return model


@hookimpl
def register_transforms(register):
    register("lora", lora, options=LoraOptions)


@hookimpl
def register_commands(cli):
    from sigerlm_lora.cli import app

    cli.add_typer(app, name="lora")
