"""The plugin contract: every hook SigerLM calls, with the arguments it passes.

Hooks are always called with keyword arguments, so an implementation asks only for the
arguments it uses. Contribution hooks are named ``register_<plural noun>(register)``;
lifecycle hooks are a verb and a noun (``prepare_run``, ``run_finished``).

``register`` is a callback with the signature ``register(name, factory, options=None,
description=None)``. ``options`` is a pydantic model (``extra="forbid"``) that validates the
component's options in a manifest; ``factory`` is called with the context of its kind
(positionally, see each hook) followed by the validated options object:
``factory(*context, options)``. The host
records which plugin registered each component: when two plugins register one name, a
manifest picks one with ``plugin:name``.

Every hook here has a heading with its exact signature in ``docs/plugin-hooks.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # only for readers and type checkers: keeps this module light
    import typer

    from sigerlm.registry import Register

PROJECT = "sigerlm"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(historic=True)
def add_hooks(plugin_manager: Any) -> None:
    """Add hook specifications of your own with ``plugin_manager.add_hookspecs(namespace)``.

    Called once for every plugin as soon as it is registered (a historic hook, as in pytest's
    ``pytest_addhooks``), before any contribution hook runs, so other plugins can implement
    the new hooks. Those implementations should be marked ``@hookimpl(optionalhook=True)``
    so they still load when the plugin that declares the hook is absent.

    .. versionadded:: 0.1
    """


@hookspec
def register_blocks(register: Register) -> None:
    """Register backbone blocks (mixers such as ``ssm``, or branches such as ``moe``).

    Factory context: ``factory(config, layer_idx, options)`` returns a ``torch.nn.Module`` with
    ``forward(hidden_states, state=None, return_state=False)`` mapping ``(b, l, d)`` to
    ``(b, l, d)`` (and the state after the last position), ``init_state(batch_size, device,
    dtype)`` and ``step(x, state)`` for one position ``(b, d)``. A manifest gives every layer
    ``model.block`` and may place other blocks on chosen layers (``model.blocks``).

    A block (or any module of the model) may add to training: ``pop_aux()`` returns what its
    latest ``forward`` recorded, ``{"losses": {name: (weight, tensor)}, "metrics": {name:
    float}}``, or ``None``. The model adds ``weight * mean(tensor over the modules reporting
    the name)`` to the loss; the train step logs every loss and metric (averaged over ranks) to
    ``metrics.jsonl``, the progress bar, ``loss.png`` and its summary; evaluation reports them.

    .. versionadded:: 0.1
    """


@hookspec
def register_adapters(register: Register) -> None:
    """Register modality adapters (``text`` is the first).

    Factory context: ``factory(config, options)`` returns a module that turns a batch (a mapping
    of tensors, batch first, sequence second) into ``inputs_embeds`` (``embed(batch)``), hidden
    states into outputs (``head(hidden_states)``) and a loss (``loss(batch, hidden_states)``).
    It owns its embedding and head; the backbone only sees vectors. Optional methods:
    ``save_files(folder) -> dict`` writes files into a model folder (a tokenizer) and returns
    keys for its ``config.json``; ``load_files(folder, meta)`` reads them back;
    ``count_tokens(batch)`` counts the positions that carry a loss; ``baseline(train, valid,
    batches) -> dict`` scores a trivial model for comparison (unigram perplexity for text).

    .. versionadded:: 0.1
    """


@hookspec
def register_tokenizers(register: Register) -> None:
    """Register tokenizers.

    Factory context: ``factory(options)`` returns an object with ``encode(text) -> list[int]``,
    ``decode(ids) -> str``, ``vocab_size`` and ``special_tokens``. Options of datasets and
    adapters name a tokenizer like any component (``tokenizer: {use: bpe, path: tok/}``).

    .. versionadded:: 0.1
    """


@hookspec
def register_transforms(register: Register) -> None:
    """Register model transforms (LoRA, quantization-aware wrappers, freezing rules).

    Factory context: ``factory(model, options)`` changes or wraps the model and returns it.
    Transforms run in the order the manifest lists them, after the model is built.

    .. versionadded:: 0.1
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets.

    Factory context: ``factory(run, options)`` returns an iterable of batches for the run's
    rank (``run.rank`` of ``run.world_size``), seeded from ``run.seed``.

    .. versionadded:: 0.1
    """


@hookspec
def register_evaluators(register: Register) -> None:
    """Register evaluators (perplexity, chrF++, ...).

    Factory context: ``factory(run, options)`` returns a mapping of metric names to numbers.

    .. versionadded:: 0.1
    """


@hookspec
def register_exporters(register: Register) -> None:
    """Register exporters (safetensors folders, ONNX decode graphs, ...).

    Factory context: ``factory(model, out_dir, options)`` writes the exported files under
    ``out_dir`` and returns the path of what it wrote.

    .. versionadded:: 0.1
    """


@hookspec
def register_runtimes(register: Register) -> None:
    """Register decode back-ends (``torch`` in core, ``onnxruntime`` in sigerlm-onnx).

    Factory context: ``factory(model, options)`` returns a runtime: ``name``, ``threads`` and

    - ``prefill(inputs, state=None) -> (outputs, state)``: ``inputs`` is what the model's
      adapter embeds, a mapping of tensors ``(b, l, ...)`` (``{"input_ids": ids}`` for text);
      ``outputs`` are the adapter's outputs at the last position ``(b, ...)`` (logits);
    - ``step(inputs, state) -> (outputs, state)``: one position, tensors ``(b, ...)``, at a
      cost that does not depend on how many positions came before;
    - ``score(inputs, state=None) -> (outputs, state)``: outputs at every position ``(b, l, ...)``
      (evaluation; a runtime without it is scored one ``step`` at a time);
    - ``init_state(batch_size)``, ``stack_states(states) -> state`` (rows of several states in
      one batch) and ``select_rows(state, rows) -> state`` (keep the given rows).

    Generation, chat, serving and evaluation get theirs with
    ``plugin_manager.get_component("runtimes", name).build(model, options=...)``.

    .. versionadded:: 0.1
    """


@hookspec
def register_steps(register: Register) -> None:
    """Register manifest steps (``train``, ``evaluate``, ``export``, ...).

    Factory context: ``factory(run, options)`` does the step's work and returns a mapping of
    results (numbers, paths) or ``None``. Steps run in manifest order; a step must be able to
    continue its own work when ``run.resume`` is true.

    .. versionadded:: 0.1
    """


@hookspec
def register_commands(cli: typer.Typer) -> None:
    """Add command-line commands to ``siger``.

    ``cli`` is the root ``typer.Typer`` application. Put a plugin's commands under its own
    name: ``cli.add_typer(app, name="lampung")`` gives ``siger lampung ...``. Import heavy
    modules inside the command functions, not here: this hook runs on every ``siger`` call.

    .. versionadded:: 0.1
    """


@hookspec
def prepare_run(run: Any) -> None:
    """Called after a manifest has been validated and its run folder prepared, before the
    first step. ``run`` gives the resolved manifest, ``out_dir``, the plugin manager and a
    ``state`` dictionary steps share; a plugin may add to ``run.state`` or log here.

    .. versionadded:: 0.1
    """


@hookspec
def prepare_model(run: Any, model: Any) -> None:
    """Called when a run has built its model (blocks, adapter, weights from ``init_from``),
    before the manifest's transforms. A plugin may give the model what the run holds: the text
    plugin hands the text adapter the run's tokenizer, which is saved with the model.

    .. versionadded:: 0.2
    """


@hookspec
def run_finished(run: Any, results: dict[str, Any]) -> None:
    """Called once after every step of a run succeeded. ``results`` is what was written to
    ``metrics.json``: ``{"steps": [...]}`` with each step's name, seconds and results.

    .. versionadded:: 0.1
    """
