"""``export_folder``: a model folder plus its ONNX graph, metadata and parity report.

The folder written is an ordinary model folder (``config.json``, ``model.safetensors``,
tokenizer files), so ``siger generate/chat/serve`` load it like any other, with:

- ``model.onnx``: the prefill graph, which is also the decode step at length 1;
- ``config.json``'s ``onnx`` entry: source identity and tokenizer hash, opset, quantization
  (and why ``reduce_range``), the onnxruntime version it was checked with, the graph's sha256;
- ``parity.json``: onnxruntime against torch (see ``parity``).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

from sigerlm_onnx.runtime import GRAPH_FILE, sha256

log = logging.getLogger("sigerlm.onnx")


def export_folder(model: Any, out: Path, options: Any, plugins: dict[str, str] | None = None) -> Path:
    """Write the export of ``model`` into ``out`` (checked by the caller) and return ``out``."""
    import onnx
    import onnxruntime

    from sigerlm_onnx.graphs import build_prefill, export_graphs, input_name, is_text, output_name, state_layout
    from sigerlm_onnx.quantize import int8_reduce_range, quantize_int4, quantize_int8

    out = Path(out)
    model = model.eval()
    graphs = export_graphs(model, options.opset)
    body, head = graphs["body"], graphs["head"]
    quant: dict[str, Any] = {"method": options.quantize}
    if options.quantize == "int8":
        reduce_range, why = int8_reduce_range()
        body = quantize_int8(body, reduce_range, embedding=options.quantize_embedding)
        head = quantize_int8(head, reduce_range)
        quant.update(weight_type="QInt8", reduce_range=reduce_range, reduce_range_reason=why)
        quant["embedding"] = "int8, a scale per row" if options.quantize_embedding and is_text(model) else "fp32"
    elif options.quantize == "int4":
        body, rewritten = quantize_int4(
            body, options.block_size, options.accuracy_level, embedding=options.quantize_embedding
        )
        head, _ = quantize_int4(head, options.block_size, options.accuracy_level)
        quant.update(
            op="MatMulNBits",
            block_size=options.block_size,
            accuracy_level=options.accuracy_level,
            gemm_rewritten=rewritten,
        )
        quant["embedding"] = (
            f"GatherBlockQuantized, 4-bit blocks of {options.block_size}"
            if options.quantize_embedding and is_text(model)
            else "fp32"
        )
    prefill = build_prefill(body, head)
    tokenizer = getattr(model.adapter, "tokenizer", None)
    identity = model.identity
    onnx.helper.set_model_props(prefill, {"sigerlm_identity": identity, "sigerlm_graph": "prefill"})
    onnx.checker.check_model(prefill)

    model.save(out, plugins)
    graph_path = out / GRAPH_FILE
    onnx.save(prefill, str(graph_path))
    source = getattr(model, "source", None)
    meta = {
        "graph": GRAPH_FILE,
        "sha256": sha256(graph_path),
        "opset": options.opset,
        "quantization": quant,
        "onnxruntime": onnxruntime.__version__,
        "onnx": onnx.__version__,
        "source": {
            "identity": identity,
            "folder": str(source) if source else None,
            "tokenizer_hash": tokenizer.hash if tokenizer is not None else None,
        },
        "n_layers": len(model.backbone.layers),
        "state_layout": [list(s) for s in state_layout(model)],
        "adapter": _adapter_use(model),
        "inputs": (
            "input_ids (b, l) + state_j (n_layers, b, ...) -> logits (b, v) at the last position + new_state_j"
            if is_text(model)
            else "inputs_embeds (b, l, d) (the adapter's embed, run in torch by the runtime) + state_j "
            "(n_layers, b, ...) -> outputs (the adapter's head) at the last position + new_state_j"
        ),
        "input": input_name(model),
        "output": output_name(model),
    }
    config_file = out / "config.json"
    config = json.loads(config_file.read_text(encoding="utf-8"))
    config["onnx"] = meta
    config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if options.parity:
        report = parity(model, out, options)
        (out / "parity.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
        config["onnx"]["parity"] = {k: v for k, v in report.items() if not isinstance(v, (dict, list))}
        config_file.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return out


def _adapter_use(model: Any) -> str | None:
    spec = (getattr(model, "spec", None) or {}).get("adapter")
    return spec.get("use") if isinstance(spec, dict) else spec


def parity(model: Any, folder: Path, options: Any) -> dict[str, Any]:
    """onnxruntime against torch on the export: chained decode steps at batch 1 and 3 (logit
    error relative to the logit scale, greedy tokens), and over ``parity_positions`` positions of
    text (the tokenizer's encoding of ``parity_text``, else seeded random ids) the top-1
    agreement and both perplexities."""
    import torch

    from sigerlm.runtime import TorchRuntime
    from sigerlm_onnx.graphs import is_text
    from sigerlm_onnx.runtime import OnnxRuntime

    torch_rt = TorchRuntime(model, threads=None)
    onnx_rt = OnnxRuntime(model, threads=options.threads, folder=folder)
    report: dict[str, Any] = {"quantization": options.quantize, "steps": options.parity_steps}
    if not is_text(model):
        return report | embeds_parity(model, onnx_rt, options)
    generator = torch.Generator().manual_seed(0)
    for batch in (1, 3):
        prompt = torch.randint(0, model.adapter.vocab_size, (batch, 5), generator=generator)
        ref, ref_state = torch_rt.prefill({"input_ids": prompt})
        got, got_state = onnx_rt.prefill({"input_ids": prompt})
        worst, same = 0.0, True
        for _ in range(options.parity_steps):
            scale = float(ref.abs().max())
            worst = max(worst, float((got - ref).abs().max()) / max(scale, 1e-12))
            ref_ids, got_ids = ref.argmax(-1), got.argmax(-1)
            same = same and bool((ref_ids == got_ids).all())
            ref, ref_state = torch_rt.step({"input_ids": ref_ids}, ref_state)
            got, got_state = onnx_rt.step({"input_ids": ref_ids}, got_state)  # same tokens: errors don't fork
        report[f"batch{batch}_max_rel_logit_error"] = worst
        report[f"batch{batch}_greedy_identical"] = same
    ids, source = _parity_tokens(model, options)
    ref_logits, _ = torch_rt.score({"input_ids": ids[None, :-1]})
    got_logits, _ = onnx_rt.score({"input_ids": ids[None, :-1]})
    target = ids[1:]
    report["text_source"] = source
    report["positions"] = int(target.numel())
    report["top1_agreement"] = float((ref_logits[0].argmax(-1) == got_logits[0].argmax(-1)).float().mean())
    ppl = lambda logits: math.exp(float(torch.nn.functional.cross_entropy(logits[0].float(), target)))  # noqa: E731
    report["perplexity_torch"] = ppl(ref_logits)
    report["perplexity_onnx"] = ppl(got_logits)
    report["perplexity_ratio"] = report["perplexity_onnx"] / report["perplexity_torch"]
    log.info("parity: %s", {k: v for k, v in report.items() if not isinstance(v, (dict, list))})
    return report


def embeds_parity(model: Any, onnx_rt: Any, options: Any) -> dict[str, Any]:
    """A graph that takes ``inputs_embeds``: the same seeded random embeddings through torch
    (backbone + the adapter's head) and the graph, chained steps at batch 1 and 3 after a prefill
    of 5 positions, then a prefill of ``parity_positions`` positions."""
    import torch

    report: dict[str, Any] = {"inputs": "seeded random inputs_embeds (the adapter's embed runs in torch)"}
    generator = torch.Generator().manual_seed(0)
    d = model.config.d_model

    def rel(got: Any, ref: Any) -> float:
        return float((got - ref).abs().max()) / max(float(ref.abs().max()), 1e-12)

    with torch.inference_mode():
        for batch in (1, 3):
            x = torch.randn(batch, 5, d, generator=generator)
            hidden, ref_state = model.forward_hidden(x, None, return_state=True)
            ref = model.adapter.head(hidden[:, -1])
            got, got_state = onnx_rt._run(x, None)
            worst, same = rel(got, ref), bool((got.flatten(1).argmax(-1) == ref.flatten(1).argmax(-1)).all())
            for _ in range(options.parity_steps):
                x = torch.randn(batch, d, generator=generator)
                hidden, ref_state = model.backbone.step(x, ref_state)
                ref = model.adapter.head(hidden)
                got, got_state = onnx_rt._run(x[:, None], got_state)
                worst = max(worst, rel(got, ref))
                same = same and bool((got.flatten(1).argmax(-1) == ref.flatten(1).argmax(-1)).all())
            report[f"batch{batch}_max_rel_output_error"] = worst
            report[f"batch{batch}_argmax_identical"] = same
        x = torch.randn(1, options.parity_positions, d, generator=generator)
        ref = model.adapter.head(model.forward_hidden(x)[:, -1])
        got, _ = onnx_rt._run(x, None)
        report["positions"] = options.parity_positions
        report["prefill_max_rel_output_error"] = rel(got, ref)
    log.info("parity: %s", report)
    return report


def _parity_tokens(model: Any, options: Any) -> tuple[Any, str]:
    import torch

    n = options.parity_positions + 1
    tokenizer = getattr(model.adapter, "tokenizer", None)
    if options.parity_text and tokenizer is not None:
        text = Path(options.parity_text).read_text(encoding="utf-8")
        ids = tokenizer.encode(text)[:n]
        if len(ids) >= 2:
            return torch.tensor(ids), f"{options.parity_text} ({len(ids) - 1} positions)"
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, model.adapter.vocab_size, (n,), generator=generator), "random token ids (seed 1)"
