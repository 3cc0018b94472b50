"""The staged pipeline's steps: ``stage`` (train one model in its own run folder under
``stages/<name>``), ``gate`` (pass or fail on a stage's step count and losses) and
``moe-resolve`` (adaptive sizing at the boundary). Domain-neutral: a stage's model, data and
training are whatever the manifest gives.

Every stage is a run of its own (``run.json``, checkpoints, ``metrics.jsonl``, its model
folder), so ``siger run --resume`` continues the pipeline where it stopped: finished stages
are skipped, an interrupted one continues from its newest checkpoint.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from sigerlm.errors import SigerError

log = logging.getLogger("sigerlm.moe")

SIZING_FILE = "moe-sizing.json"


class GateClosed(SigerError):
    """A gate's condition does not hold; the message says which and by how much."""


def stage_dir(run: Any, name: str) -> Path:
    return run.out_dir / "stages" / name


def read_sizing(run: Any) -> dict[str, Any] | None:
    """The resolver's decision of this run (kept in ``run.state``, else its file on resume)."""
    sizing = run.state.get("moe_sizing")
    path = run.out_dir / SIZING_FILE
    if sizing is None and path.exists():
        sizing = run.state["moe_sizing"] = json.loads(path.read_text(encoding="utf-8"))
    return sizing


def stage(run: Any, options: Any) -> dict[str, Any]:
    """Train the stage's model in ``stages/<name>`` of the run folder: a run of its own with the
    parent's plugins, seed and data (unless ``data`` is given) and one ``train`` step."""
    from sigerlm.manifest import load_manifest
    from sigerlm.run import execute

    parent = run.resolved.to_dict()
    model = json.loads(json.dumps(options.model))
    if options.sizing:
        sizing = read_sizing(run)
        if sizing is None:
            raise SigerError(f"stage '{options.name}' asks for sizing: true, but no moe-resolve step ran before it")
        block = model.get("block") or {"use": "moe"}
        block = {"use": block} if isinstance(block, str) else dict(block)
        block.update({k: sizing[k] for k in ("n_experts", "top_k", "moe_every")})
        model["block"] = block
        log.info("stage %s: model.block %s (from moe-resolve)", options.name, block)
    manifest = {
        "siger": 1,
        "name": f"{run.name}-{options.name}",
        "seed": run.seed,
        "model": model,
        "data": options.data if options.data is not None else parent.get("data", {}),
        "steps": [{"use": "train", **options.train}],
    }
    if run.manifest.plugins is not None:
        manifest["plugins"] = list(run.manifest.plugins)
    out = stage_dir(run, options.name)
    resolved, pm = load_manifest(manifest, [f"out_dir={out}"], pm=run.plugin_manager)
    result = execute(resolved, pm, out_dir=out, resume=(out / "run.json").exists())
    summary = dict(result.results["steps"][0]["results"])
    run.state.pop("model", None)  # the stage's model is in its folder; later steps load what they need
    summary["folder"] = str(out)
    return summary


def stage_history(run: Any, name: str) -> tuple[int, list[float]]:
    """A stage's last step and its validation losses, oldest first."""
    path = stage_dir(run, name) / "metrics.jsonl"
    if not path.exists():
        raise GateClosed(f"gate: stage '{name}' has no metrics ({path} is missing): run its stage step first")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    steps = max((int(r.get("step", 0)) for r in rows), default=0)
    return steps, [float(r["valid_loss"]) for r in rows if r.get("valid_loss") is not None]


def gate(run: Any, options: Any) -> dict[str, Any]:
    """Pass when every condition given holds on the stage's metrics; otherwise fail the run
    (``on_fail: error``) or log and go on (``warn``) with a message naming each condition."""
    steps, losses = stage_history(run, options.stage)
    latest = losses[-1] if losses else math.inf
    failed, checked = [], []
    if options.min_steps is not None:
        checked.append(f"steps {steps} >= {options.min_steps}")
        if steps < options.min_steps:
            failed.append(f"stage '{options.stage}' trained {steps} steps, the gate needs {options.min_steps}")
    if options.max_valid_loss is not None:
        checked.append(f"valid loss {latest:.4f} <= {options.max_valid_loss}")
        if not latest <= options.max_valid_loss:
            failed.append(f"stage '{options.stage}' valid loss {latest:.4f} is above {options.max_valid_loss}")
    if options.max_loss_delta is not None:
        if options.against is None:
            raise SigerError("gate: max_loss_delta needs against: STAGE (the stage to compare with)")
        _, theirs = stage_history(run, options.against)
        delta = latest - (theirs[-1] if theirs else math.inf)
        checked.append(f"valid loss - {options.against}'s = {delta:+.4f} <= {options.max_loss_delta}")
        if not delta <= options.max_loss_delta:
            failed.append(
                f"stage '{options.stage}' valid loss {latest:.4f} is {delta:+.4f} from '{options.against}' "
                f"({theirs[-1] if theirs else 'none'}), more than {options.max_loss_delta}"
            )
    if options.plateau_window is not None:
        window = losses[-(options.plateau_window + 1) :]
        gain = window[0] - min(window[1:]) if len(window) > options.plateau_window else math.inf
        checked.append(f"gain over the last {options.plateau_window} evaluations {gain:.4f} < {options.plateau_delta}")
        if not gain < options.plateau_delta:
            failed.append(
                f"stage '{options.stage}' has not plateaued: its valid loss fell {gain:.4f} over the last "
                f"{options.plateau_window} evaluations (plateau below {options.plateau_delta})"
            )
    result = {"passed": not failed, "steps": steps, "valid_loss": None if not losses else latest}
    if not failed:
        log.info("gate on stage %s passed: %s", options.stage, "; ".join(checked) or "no conditions")
        return result
    message = "gate closed: " + "; ".join(failed)
    if options.on_fail == "warn":
        log.warning("%s (on_fail: warn, going on)", message)
        return result
    raise GateClosed(message + "; change the stage's training or the gate's thresholds and run again")


def moe_resolve(run: Any, options: Any) -> dict[str, Any]:
    """Decide the MoE stage's size from the hardware and the dense stage's validation losses;
    write it to ``moe-sizing.json`` and ``run.state["moe_sizing"]`` for ``stage`` (``sizing: true``)."""
    from sigerlm_moe.sizing import Hardware, Sizing, detect_hardware, resolve_sizing

    if options.hardware is not None:
        hw = Hardware(**options.hardware.model_dump())
        source = "given"
    else:
        hw, source = detect_hardware(), "detected"
    losses = stage_history(run, options.stage)[1] if options.stage else None
    if options.adaptive:
        sizing = resolve_sizing(
            hw,
            losses,
            min_experts=options.min_experts,
            max_experts=options.max_experts,
            unstable_loss=options.unstable_loss,
            mature_loss=options.mature_loss,
            d_model=options.d_model,
            n_layers=options.n_layers,
            d_expert=options.d_expert,
        )
    else:
        n, k, every = options.static
        sizing = Sizing(n, k, every, "static", "unknown", [f"adaptive: false: static {n} experts, top-{k}"])
    decision = sizing.to_dict() | {"hardware": hw.__dict__ | {"source": source}, "valid_losses": losses}
    for line in sizing.reasons:
        log.info("moe-resolve: %s", line)
    log.info("moe-resolve: %d experts, top-%d, every %d", sizing.n_experts, sizing.top_k, sizing.moe_every)
    run.state["moe_sizing"] = decision
    if run.is_main:
        from sigerlm.io import atomic_write_json

        atomic_write_json(run.out_dir / SIZING_FILE, decision)
    return {k: decision[k] for k in ("n_experts", "top_k", "moe_every", "tier", "loss_state")}
