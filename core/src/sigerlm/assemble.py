"""Models from names: the one path from a manifest's ``model:`` or a model folder's
``config.json`` to a ``SigerModel``, through the component registry.

- ``build_model(components, config, adapter, blocks)``: a fresh model from specs;
- ``load_model(folder)``: a saved model folder of any registered adapter;
- ``model_for_run(run)``: the run's model (warm start, ``prepare_model`` hook, transforms);
- ``warm_start(model, folder, strict)``: copy a folder's tensors into a model.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from sigerlm.errors import SigerError

log = logging.getLogger("sigerlm.model")


def _split(spec: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    options = {k: v for k, v in spec.items() if k != "use"}
    return str(spec["use"]), options


def build_model(
    components: Any,
    config: Any,
    adapter: Mapping[str, Any],
    blocks: Sequence[Mapping[str, Any]] | None = None,
) -> Any:
    """A fresh model: ``adapter`` ``{use, ...options}``, ``blocks`` one spec per layer (default:
    ``config.block`` everywhere). ``components`` is a plugin manager (``get_component``)."""
    from sigerlm.model.model import SigerModel

    per_layer = list(blocks) if blocks else [{"use": config.block}] * config.n_layers
    if len(per_layer) != config.n_layers:
        raise SigerError(f"{len(per_layer)} block specs for {config.n_layers} layers")
    built = []
    for spec in per_layer:
        name, options = _split(spec)
        component = components.get_component("blocks", name)
        built.append((component, component.validate(options)))
    name, options = _split(adapter)
    adapter_component = components.get_component("adapters", name)
    adapter_options = adapter_component.validate(options)
    spec = {"adapter": {"use": adapter_component.qualified_name, **adapter_options.model_dump(mode="json")}}
    layer_specs = [{"use": c.qualified_name, **o.model_dump(mode="json")} for c, o in built]
    default = {"use": components.get_component("blocks", config.block).qualified_name}
    if any(layer != default for layer in layer_specs):
        spec["blocks"] = layer_specs
    return SigerModel(
        config,
        adapter_component.build(config, options=adapter_options),
        lambda cfg, i: built[i][0].build(cfg, i, options=built[i][1]),
        spec,
    )


def load_model(folder: str | Path, components: Any) -> Any:
    """Load a model folder (any adapter a plugin registers): config, weights and the adapter's
    files (``adapter.load_files(folder, meta)``, a tokenizer for text). ``components`` is a
    plugin manager (``sigerlm.plugins.make_plugin_manager()``) with the folder's plugins."""
    from sigerlm.model.checkpoint import WEIGHTS_FILE, CheckpointError, load_state, read_config, read_tensors

    folder = Path(folder)
    config, meta = read_config(folder)
    if not isinstance(meta.get("adapter"), Mapping) or "use" not in meta["adapter"]:
        raise CheckpointError(f"{folder}/config.json names no adapter ({{use: NAME, ...}}): not a model folder")
    model = build_model(components, config, meta["adapter"], meta.get("blocks"))
    weights = folder / WEIGHTS_FILE
    load_state(model, read_tensors(weights), source=str(weights))
    load_files = getattr(model.adapter, "load_files", None)
    if callable(load_files):
        load_files(folder, meta)
    model.source = folder
    return model.eval()


def warm_start(model: Any, folder: str | Path, strict: bool = True) -> dict[str, list[str]]:
    """Copy a folder's weights into ``model``. ``strict``: every tensor must fit (names and
    shapes); otherwise tensors whose name and shape match are copied and the rest keep their
    fresh values. Returns the names ``copied``, ``new`` (kept fresh) and ``skipped`` (in the
    folder, not used)."""
    import torch

    from sigerlm.model.checkpoint import WEIGHTS_FILE, load_state, read_tensors

    weights = Path(folder) / WEIGHTS_FILE
    tensors = read_tensors(weights)
    own = model.state_dict()
    if strict:
        load_state(model, tensors, source=str(weights))
        return {"copied": sorted(own), "new": [], "skipped": []}
    copied = sorted(n for n in own if n in tensors and tuple(tensors[n].shape) == tuple(own[n].shape))
    with torch.no_grad():
        for name in copied:
            own[name].copy_(tensors[name])
    return {
        "copied": copied,
        "new": sorted(set(own) - set(copied)),
        "skipped": sorted(set(tensors) - set(copied)),
    }


def model_for_run(run: Any) -> Any:
    """The model a run's manifest describes: its blocks and adapter, warm-started from
    ``model.init_from``, handed to the ``prepare_model`` hook, then its transforms in order."""
    resolved = run.resolved
    spec = run.manifest.model
    if spec is None or spec.adapter is None:
        raise SigerError(f"manifest '{run.name}' has no model with an adapter (model.adapter) to build")
    config = resolved.config
    blocks = resolved.layer_blocks()
    adapter = resolved.component("model", "adapter")
    built = build_model(
        run.plugin_manager,
        config,
        {"use": adapter.component.qualified_name, **adapter.options.model_dump(mode="json")},
        [{"use": b.component.qualified_name, **b.options.model_dump(mode="json")} for b in blocks],
    )
    if spec.init_from is not None:
        init = spec.init_source()
        report = warm_start(built, init.path, init.strict)
        built.source = Path(init.path)
        if init.strict:
            log.info("init_from %s: %d tensors loaded", init.path, len(report["copied"]))
        else:
            for kind in ("copied", "new", "skipped"):
                names = report[kind]
                log.info("warm start from %s: %s %d tensors: %s", init.path, kind, len(names), ", ".join(names) or "-")
        run.state["warm_start"] = report
    run.plugin_manager.hook.prepare_model(run=run, model=built)
    for i in range(len(spec.transforms)):
        built = run.component("model", "transforms", i).build(built)
    return built


def current_model(run: Any) -> Any:
    """The model a step after training works on: the run's trained model (``run.state["model"]``,
    set by the train step or by ``siger eval``), else the manifest's model built afresh."""
    model = run.state.get("model")
    if model is None:
        model = run.state["model"] = model_for_run(run)
    return model.eval()
