"""A backbone with its modality adapter: what the train step optimizes and saves.

Tensors are named ``backbone.*`` and ``adapter.*``, the layout of every SigerLM model folder,
so a folder written here loads with the adapter's own model class (``SigerLM`` for text).

A transform that trains only part of the model (LoRA) sets ``model.saver``: ``save`` then
writes what the transform trained (an adapter folder) instead of the whole model.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from sigerlm.model.backbone import Backbone
from sigerlm.model.checkpoint import save_model_folder


class AdaptedModel(nn.Module):
    def __init__(self, backbone: Backbone, adapter: nn.Module, adapter_spec: dict[str, Any] | None = None):
        super().__init__()
        self.backbone = backbone
        self.adapter = adapter
        self.adapter_spec = adapter_spec or {}
        self.config = backbone.config
        #: ``saver(folder, tokenizer, plugins) -> Path``, set by transforms that save only their part
        self.saver: Callable[[Path, Any, dict[str, str] | None], Path] | None = None
        #: the model folder the weights came from (``model.init_from``), if any
        self.init_from: Path | None = None

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        """The adapter's loss on a batch."""
        hidden = self.backbone.forward_hidden(self.adapter.embed(batch))
        return self.adapter.loss(batch, hidden)

    def save(self, folder: str | Path, tokenizer: Any = None, plugins: dict[str, str] | None = None) -> Path:
        if self.saver is not None:
            return self.saver(Path(folder), tokenizer, plugins)
        return save_model_folder(
            folder,
            self.state_dict(),
            self.config,
            adapter=self.adapter_spec,
            plugins=plugins,
            tokenizer_hash=tokenizer.hash if tokenizer is not None else None,
            write_extra=tokenizer.save if tokenizer is not None else None,
        )


def build_model(run: Any) -> AdaptedModel:
    """The model a manifest describes: its block, backbone config and adapter."""
    from sigerlm.errors import SigerError

    manifest = run.manifest
    if manifest.model is None or manifest.model.adapter is None:
        raise SigerError(f"manifest '{run.name}' has no model with an adapter (model.adapter) to train")
    config = run.resolved.config
    block = run.component("model", "block")
    adapter_component = run.component("model", "adapter")
    backbone = Backbone(config, lambda cfg, i: block.build(cfg, i))
    adapter = adapter_component.build(config)
    spec = {"use": adapter_component.component.qualified_name.split(":")[-1]}
    spec.update(adapter_component.options.model_dump(mode="json"))
    model = AdaptedModel(backbone, adapter, spec)
    if manifest.model.init_from is not None:
        from sigerlm.model.checkpoint import WEIGHTS_FILE, load_state, read_tensors

        folder = Path(manifest.model.init_from)
        weights = folder / WEIGHTS_FILE
        load_state(model, read_tensors(weights), source=str(weights))
        model.init_from = folder
    for i in range(len(manifest.model.transforms)):
        model = run.component("model", "transforms", i).build(model)
    return model
