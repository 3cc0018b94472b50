"""The ``onnxruntime`` runtime: the runtime contract (see the hookspec ``register_runtimes``)
over an exported folder's ``model.onnx``.

The folder is an ordinary model folder (``config.json``, ``model.safetensors``, tokenizer)
with the graph beside it and an ``onnx`` entry in ``config.json``; ``load_model`` loads it as
usual and this runtime finds the graph through ``model.source``. One graph serves both
``prefill`` (``input_ids (b, l)``) and ``step`` (the same graph at ``l = 1``; see
``sigerlm_onnx.graphs``). The state is a tuple of numpy arrays ``(L, b, ...)``, one per leaf
of a layer's state; outputs are torch tensors, as the generators expect.

A text model's graph takes ``input_ids``. Any other adapter's graph takes ``inputs_embeds``:
the runtime calls the adapter's ``embed`` (torch) on the inputs it is given (a time series'
values, mask and normalisation statistics) and the graph runs the backbone and the adapter's
head, so ``prefill``, ``step`` and ``score`` take and return what the torch runtime does.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from sigerlm.errors import SigerError

log = logging.getLogger("sigerlm.onnx")

GRAPH_FILE = "model.onnx"


class OnnxRuntimeError(SigerError):
    """The exported folder or onnxruntime cannot be used; the message names the problem."""


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def import_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise OnnxRuntimeError(
            "the onnxruntime runtime needs the onnxruntime package: pip install 'sigerlm-onnx' (or onnxruntime)"
        ) from None
    return onnxruntime


def export_meta(folder: Path) -> dict[str, Any]:
    """The ``onnx`` entry of an exported folder's ``config.json``."""
    file = folder / "config.json"
    try:
        meta = json.loads(file.read_text(encoding="utf-8")).get("onnx")
    except (OSError, ValueError) as exc:
        raise OnnxRuntimeError(f"{file}: cannot read ({exc})") from None
    if not isinstance(meta, dict):
        raise OnnxRuntimeError(
            f"{folder} is a model folder but not an ONNX export: run `siger export onnx {folder} --out DIR` "
            "and pass DIR"
        )
    return meta


def check_graph(folder: Path, meta: Mapping[str, Any], identity: str) -> Path:
    """The graph's path after checking it is the one exported for this model, whole."""
    import onnx

    path = folder / meta.get("graph", GRAPH_FILE)
    if not path.is_file():
        raise OnnxRuntimeError(f"{path}: the exported graph is missing")
    if sha256(path) == meta.get("sha256"):
        return path
    try:
        graph = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # protobuf's DecodeError and friends
        raise OnnxRuntimeError(f"{path}: corrupt: not a readable ONNX graph ({type(exc).__name__})") from None
    props = {p.key: p.value for p in graph.metadata_props}
    if props.get("sigerlm_identity") != identity:
        made_for = props.get("sigerlm_identity")
        what = f"made for model {made_for}" if made_for else "not written by sigerlm-onnx"
        raise OnnxRuntimeError(f"{path}: a foreign ONNX graph ({what}); this folder's model is {identity}")
    raise OnnxRuntimeError(f"{path}: changed since export (its sha256 differs from config.json's): re-export")


class OnnxRuntime:
    name = "onnxruntime"

    def __init__(self, model: Any, threads: int | None = None, optimization: str = "all", folder: Any = None):
        ort = import_onnxruntime()
        import numpy as np

        self.np = np
        source = folder or getattr(model, "source", None)
        if source is None:
            raise OnnxRuntimeError("the onnxruntime runtime needs a model loaded from an exported folder")
        self.folder = Path(source)
        self.meta = meta = export_meta(self.folder)
        self.model = model
        identity = str(getattr(model, "identity", ""))
        if meta.get("source", {}).get("identity") != identity:
            raise OnnxRuntimeError(
                f"{self.folder}: the graph was exported from {meta.get('source', {}).get('identity')}, "
                f"the folder's weights are {identity}"
            )
        tokenizer = getattr(getattr(model, "adapter", None), "tokenizer", None)
        saved_hash = meta.get("source", {}).get("tokenizer_hash")
        if saved_hash and (tokenizer is None or tokenizer.hash != saved_hash):
            have = tokenizer.hash[:12] + "..." if tokenizer is not None else "none"
            raise OnnxRuntimeError(
                f"{self.folder}: the tokenizer ({have}) is not the one the graph was exported with "
                f"({saved_hash[:12]}...): token ids would mean different text"
            )
        path = check_graph(self.folder, meta, identity)
        levels = {
            "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
            "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
            "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
            "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
        }
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = levels[optimization]
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            opset = int(meta.get("opset", 0))
            message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if "opset" in message.lower() or "Opset" in message:
                raise OnnxRuntimeError(
                    f"{path}: exported with opset {opset}, which onnxruntime {ort.__version__} cannot run "
                    f"(exported with onnxruntime {meta.get('onnxruntime')}): upgrade onnxruntime or re-export "
                    f"with --opset {self.max_opset()}"
                ) from None
            raise OnnxRuntimeError(f"{path}: onnxruntime {ort.__version__} cannot load it: {message}") from None
        self.threads = threads or int(options.intra_op_num_threads) or _cpu_count()
        self.state_names = [i.name for i in self.session.get_inputs() if i.name.startswith("state_")]
        self.input_name = self.session.get_inputs()[0].name  # input_ids or inputs_embeds
        self.layout = [tuple(shape) for shape in meta["state_layout"]]
        self.n_layers = int(meta["n_layers"])
        log.info(
            "onnxruntime %s: %s (%s), threads %s, graph optimisation %s",
            ort.__version__,
            path,
            meta.get("quantization", {}).get("method", "none"),
            threads or "default",
            optimization,
        )

    @staticmethod
    def max_opset() -> int:
        import onnx

        return min(onnx.defs.onnx_opset_version(), 21)

    # -- the contract ------------------------------------------------------------------------------
    def init_state(self, batch_size: int) -> tuple[Any, ...]:
        return tuple(self.np.zeros((self.n_layers, batch_size, *shape), self.np.float32) for shape in self.layout)

    def _run(self, inputs: Any, state: Any) -> tuple[Any, tuple[Any, ...]]:
        """One graph call: ``input_ids (b, l)`` or ``inputs_embeds (b, l, d)``."""
        import torch

        np = self.np
        if isinstance(inputs, torch.Tensor):
            inputs = inputs.detach().numpy()
        dtype = np.int64 if self.input_name == "input_ids" else np.float32
        inputs = np.ascontiguousarray(inputs, dtype=dtype)
        if state is None:
            state = self.init_state(inputs.shape[0])
        feed = {self.input_name: inputs, **dict(zip(self.state_names, state, strict=True))}
        out, *new = self.session.run(None, feed)
        return torch.from_numpy(out), tuple(new)  # (b, v) or the adapter's outputs; states (L, b, ...)

    def _sequence(self, inputs: Mapping[str, Any]) -> Any:
        """What the graph takes for a sequence: ``input_ids (b, l)`` or the adapter's
        ``embed(inputs)`` ``(b, l, d)``."""
        if self.input_name == "input_ids":
            return _ids(inputs)
        import torch

        with torch.inference_mode():
            return self.model.adapter.embed(inputs)  # (b, l, d)

    def prefill(self, inputs: Mapping[str, Any], state: Any = None) -> tuple[Any, Any]:
        """Outputs after the last position and the state: one graph call, any length."""
        return self._run(self._sequence(inputs), state)

    def step(self, inputs: Mapping[str, Any], state: Any) -> tuple[Any, Any]:
        """One position for every row: ``input_ids (b,)``, or the adapter's inputs ``(b, ...)``."""
        if self.input_name == "input_ids":
            return self._run(_ids(inputs)[:, None], state)
        return self._run(self._sequence({k: v[:, None] for k, v in inputs.items()}), state)

    def score(self, inputs: Mapping[str, Any], state: Any = None) -> tuple[Any, Any]:
        """Outputs at every position ``(b, l, ...)`` (the graph gives the last one: one call per position)."""
        import torch

        sequence = self._sequence(inputs)
        outputs = []
        for t in range(sequence.shape[1]):
            out, state = self._run(sequence[:, t : t + 1], state)
            outputs.append(out)
        return torch.stack(outputs, dim=1), state

    def stack_states(self, states: list[Any]) -> tuple[Any, ...]:
        """One batched state from per-row states (the batch is axis 1)."""
        return tuple(self.np.concatenate([s[j] for s in states], axis=1) for j in range(len(states[0])))

    def select_rows(self, state: Any, rows: Any) -> tuple[Any, ...]:
        index = rows.numpy() if hasattr(rows, "numpy") else self.np.asarray(rows)
        return tuple(self.np.ascontiguousarray(s[:, index]) for s in state)


def _ids(inputs: Mapping[str, Any]) -> Any:
    if set(inputs) != {"input_ids"}:
        raise OnnxRuntimeError(f"the exported graph takes input_ids only, got {sorted(inputs)}")
    return inputs["input_ids"]


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
