"""``SigerModel``: a backbone with its modality adapter, the one model class of SigerLM.

Glossary: ``b`` batch, ``l`` sequence length, ``d`` model width.

    batch -> adapter.embed -> (b, l, d) -> backbone.forward_hidden -> (b, l, d) -> adapter.loss / head

Tensors are named ``backbone.*`` and ``adapter.*``: the layout of every SigerLM model folder.
The model layer never looks anything up in a plugin registry: it is handed the block factory
and the adapter (``sigerlm.assemble`` builds both from names).

Auxiliary losses and metrics: any submodule (a block, a branch, the adapter) may define
``pop_aux() -> {"losses": {name: (weight, tensor)}, "metrics": {name: float}}`` returning what
its latest ``forward`` recorded (or ``None``). ``forward`` adds ``weight * mean(tensor over the
modules that report the name)`` to the adapter's loss for each name and keeps the unweighted
means and the metrics in ``last_metrics`` for the train step to log.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from sigerlm.model.backbone import Backbone
from sigerlm.model.checkpoint import save_model_folder
from sigerlm.model.config import SigerConfig

BlockFactory = Callable[[SigerConfig, int], nn.Module]


class SigerModel(nn.Module):
    def __init__(
        self,
        config: SigerConfig,
        adapter: nn.Module,
        blocks: BlockFactory | None = None,
        spec: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        self.config = config
        self.backbone = Backbone(config, blocks)
        self.adapter = adapter
        #: what ``config.json`` records besides the backbone: ``{"adapter": {...}, "blocks": [...]}``
        self.spec = dict(spec or {})
        #: ``saver(folder, plugins) -> Path``, set by transforms that save only their part (LoRA)
        self.saver: Callable[[Path, Mapping[str, str] | None], Path] | None = None
        #: the model folder the weights came from, if any
        self.source: Path | None = None
        #: unweighted auxiliary losses and metrics of the latest ``forward``
        self.last_metrics: dict[str, float] = {}

    @property
    def identity(self) -> str:
        return self.config.identity

    # -- training --------------------------------------------------------------------------------
    def forward(self, batch: Mapping[str, Tensor]) -> Tensor:
        """The adapter's loss on a batch, plus every weighted auxiliary loss."""
        hidden = self.backbone.forward_hidden(self.adapter.embed(batch))  # (b, l, d)
        loss = self.adapter.loss(batch, hidden)
        extra, self.last_metrics = self.collect_aux()
        return loss + extra if extra is not None else loss

    def collect_aux(self) -> tuple[Tensor | None, dict[str, float]]:
        """The weighted sum of the auxiliary losses the modules recorded, and the metrics."""
        losses: dict[str, list[Tensor]] = {}
        weights: dict[str, float] = {}
        metrics: dict[str, list[float]] = {}
        for module in self.modules():
            pop = getattr(module, "pop_aux", None)
            out = pop() if callable(pop) else None
            for name, (weight, value) in (out or {}).get("losses", {}).items():
                losses.setdefault(name, []).append(value)
                weights[name] = float(weight)
            for name, value in (out or {}).get("metrics", {}).items():
                metrics.setdefault(name, []).append(float(value))
        total = None
        report = {name: sum(values) / len(values) for name, values in metrics.items()}
        for name, values in losses.items():
            mean = sum(values) / len(values)
            report[name] = float(mean.detach())
            total = weights[name] * mean if total is None else total + weights[name] * mean
        return total, report

    # -- inference -------------------------------------------------------------------------------
    def forward_hidden(self, inputs_embeds: Tensor, state: Any = None, return_state: bool = False) -> Any:
        return self.backbone.forward_hidden(inputs_embeds, state=state, return_state=return_state)

    def init_state(self, batch_size: int) -> Any:
        return self.backbone.init_state(batch_size)

    def step(self, inputs: Mapping[str, Tensor], state: Any) -> tuple[Tensor, Any]:
        """One position for every row: each input ``(b, ...)`` -> the adapter's outputs and the new state."""
        x = self.adapter.embed({k: v[:, None] for k, v in inputs.items()})[:, 0]  # (b, d)
        hidden, state = self.backbone.step(x, state)
        return self.adapter.head(hidden), state

    # -- model folders ---------------------------------------------------------------------------
    def save(self, folder: str | Path, plugins: Mapping[str, str] | None = None) -> Path:
        """Config, weights and the adapter's files (a tokenizer) in one folder, written atomically.
        A transform that trains only its own part (LoRA) saves that part instead."""
        if self.saver is not None:
            return self.saver(Path(folder), plugins)
        return save_model_folder(
            folder,
            self.state_dict(),
            self.config,
            spec=self.spec,
            plugins=plugins,
            write_extra=getattr(self.adapter, "save_files", None),
        )

    save_pretrained = save
