"""The plugin contract: every hook SigerLM calls, with the arguments it passes.

Hooks are always called with keyword arguments, so an implementation asks only for the
arguments it uses. Contribution hooks are named ``register_<plural noun>(register)``;
lifecycle hooks are a verb and a noun (``prepare_run``, ``run_finished``).

``register`` is a callback with the signature ``register(name, factory, options=None,
description=None)``. ``options`` is a pydantic model (``extra="forbid"``) that validates the
component's options in a manifest; ``factory`` is called with the context of its kind
(positionally, see each hook) followed by the validated options object: ``factory(*context,
options)``. The host
records which plugin registered each component: when two plugins register one name, a
manifest picks one with ``plugin:name``.

Every hook here has a heading with its exact signature in ``docs/plugin-hooks.md``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:  # only for readers and type checkers: keeps this module light
    import typer

    from sigerlm.plugins import SigerPluginManager
    from sigerlm.registry import Register
    from sigerlm.run import Run

PROJECT = "sigerlm"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec(historic=True)
def add_hooks(plugin_manager: SigerPluginManager) -> None:
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

    Factory context: ``factory(config, layer_idx, **options)`` returns a ``torch.nn.Module``
    that maps ``(b, l, d)`` hidden states to ``(b, l, d)`` and, for decoding, provides
    ``init_state(batch_size)`` and ``step(x, state)``. Called once per plugin manager when
    components are first collected.

    .. versionadded:: 0.1
    """


@hookspec
def register_adapters(register: Register) -> None:
    """Register modality adapters (``text`` is the first).

    Factory context: ``factory(config, **options)`` returns a module that turns a batch into
    ``inputs_embeds`` (``embed(batch)``), hidden states into outputs (``head(hidden_states)``)
    and a loss (``loss(batch, hidden_states)``). It owns its embedding and head; the backbone
    only sees vectors.

    .. versionadded:: 0.1
    """


@hookspec
def register_tokenizers(register: Register) -> None:
    """Register tokenizers.

    Factory context: ``factory(**options)`` returns an object with ``encode(text) -> list[int]``,
    ``decode(ids) -> str``, ``vocab_size`` and ``special_tokens``.

    .. versionadded:: 0.1
    """


@hookspec
def register_transforms(register: Register) -> None:
    """Register model transforms (LoRA, quantization-aware wrappers, freezing rules).

    Factory context: ``factory(model, **options)`` changes or wraps the model and returns it.
    Transforms run in the order the manifest lists them, after the model is built.

    .. versionadded:: 0.1
    """


@hookspec
def register_datasets(register: Register) -> None:
    """Register datasets.

    Factory context: ``factory(run, **options)`` returns an iterable of batches for the run's
    rank (``run.rank`` of ``run.world_size``), seeded from ``run.seed``.

    .. versionadded:: 0.1
    """


@hookspec
def register_evaluators(register: Register) -> None:
    """Register evaluators (perplexity, chrF++, ...).

    Factory context: ``factory(run, **options)`` returns a mapping of metric names to numbers.

    .. versionadded:: 0.1
    """


@hookspec
def register_exporters(register: Register) -> None:
    """Register exporters (safetensors folders, ONNX decode graphs, ...).

    Factory context: ``factory(model, out_dir, **options)`` writes the exported files under
    ``out_dir`` and returns the path of what it wrote.

    .. versionadded:: 0.1
    """


@hookspec
def register_runtimes(register: Register) -> None:
    """Register decode back-ends (``torch`` in core, ``onnxruntime`` in sigerlm-onnx).

    Factory context: ``factory(model, **options)`` returns an object with
    ``prefill(inputs) -> (outputs, state)`` and ``step(inputs, state) -> (outputs, state)``.

    .. versionadded:: 0.1
    """


@hookspec
def register_steps(register: Register) -> None:
    """Register manifest steps (``train``, ``evaluate``, ``export``, ...).

    Factory context: ``factory(run, **options)`` does the step's work and returns a mapping of
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
def prepare_run(run: Run) -> None:
    """Called after a manifest has been validated and its run folder prepared, before the
    first step. ``run`` gives the resolved manifest, ``out_dir``, the plugin manager and a
    ``state`` dictionary steps share; a plugin may add to ``run.state`` or log here.

    .. versionadded:: 0.1
    """


@hookspec
def run_finished(run: Run, results: dict[str, Any]) -> None:
    """Called once after every step of a run succeeded. ``results`` is what was written to
    ``metrics.json``: ``{"steps": [...]}`` with each step's name, seconds and results.

    .. versionadded:: 0.1
    """
