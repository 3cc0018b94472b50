"""The ONNX graphs of a model: one decode step, and a prefill of any length built from it.

Glossary: ``b`` batch, ``l`` sequence length, ``d`` model width, ``v`` vocabulary, ``L`` layers.

A model's decode state is one tuple of tensors per layer (``(conv, ssm)`` for the SSM block);
the graphs take and return it *stacked*: leaf ``j`` of every layer in one tensor
``state_j`` ``(L, b, ...)``. Three graphs are exported from PyTorch:

- ``step``: ``input_ids (b,)`` + ``state_*`` -> ``logits (b, v)`` + ``new_state_*``;
- ``body``: the same step without the head: -> ``hidden (b, d)`` + ``new_state_*``;
- ``head``: ``hidden (b, d)`` -> ``logits (b, v)``.

The text adapter's embedding and head are in the graphs (``input_ids`` in, ``logits`` out).
Another adapter (time series: values, masks and normalisation statistics) keeps its ``embed``
in torch, where the runtime calls it: the graphs take ``inputs_embeds`` (``(b, d)`` a step,
``(b, l, d)`` the prefill) and give the adapter's ``head`` as ``outputs`` (``(b, k)`` class
logits, ``(b, h, c)`` a normalised forecast). Whatever the adapter does around its head
(de-normalising a forecast, a mean readout) stays with its callers, as with the torch runtime.

The prefill graph is put together here, not exported: an ONNX ``Loop`` runs ``body`` once per
position (the trip count is the length of ``input_ids (b, l)``, so the length is truly dynamic
and nothing is unrolled or padded), then ``head`` once on the last hidden state. PyTorch's
exporters cannot give this: a Python loop unrolls to the example's length, and a loop-free
chunked scan needs a ``(b, l, d_inner, n)`` tensor per chunk where this keeps one state.
"""

from __future__ import annotations

import io
from typing import Any

import torch
from torch import Tensor, nn

STATE = "state_{}"
NEW_STATE = "new_state_{}"


class ExportError(Exception):
    """A model that cannot be exported; the message names the module and why."""


def is_text(model: Any) -> bool:
    """Token ids in, logits out: the embedding table (and a tied head) go into the graph."""
    adapter = getattr(model, "adapter", None)
    return isinstance(getattr(adapter, "embedding", None), nn.Embedding) and hasattr(adapter, "vocab_size")


def input_name(model: Any) -> str:
    return "input_ids" if is_text(model) else "inputs_embeds"


def output_name(model: Any) -> str:
    return "logits" if is_text(model) else "outputs"


def state_layout(model: Any) -> list[tuple[int, ...]]:
    """Shapes (without the batch) of the leaves of one layer's state; every layer must agree."""
    state = model.init_state(1)
    layouts = []
    for i, layer_state in enumerate(state):
        leaves = layer_state if isinstance(layer_state, (tuple, list)) else (layer_state,)
        if not all(isinstance(t, Tensor) for t in leaves):
            raise ExportError(f"backbone.layers.{i}: its decode state is not a tuple of tensors")
        layouts.append([tuple(t.shape[1:]) for t in leaves])
    for i, layout in enumerate(layouts):
        if layout != layouts[0]:
            name = type(model.backbone.layers[i]).__name__
            raise ExportError(
                f"backbone.layers.{i} ({name}): its state {layout} differs from layer 0's {layouts[0]}: "
                "stacked states need one layout for every layer"
            )
    return layouts[0]


def unstack(states: tuple[Tensor, ...], n_layers: int, tuple_state: bool) -> list[Any]:
    per_layer = [tuple(s[i] for s in states) for i in range(n_layers)]
    return per_layer if tuple_state else [p[0] for p in per_layer]


def stack(state: list[Any]) -> list[Tensor]:
    leaves = [s if isinstance(s, (tuple, list)) else (s,) for s in state]
    return [torch.stack([layer[j] for layer in leaves]) for j in range(len(leaves[0]))]


class StepGraph(nn.Module):
    """One decode step with stacked states; ``head=False``: the hidden state, not the logits."""

    def __init__(self, model: Any, head: bool = True):
        super().__init__()
        self.model, self.head = model, head
        self.n_layers = len(model.backbone.layers)
        self.tuple_state = isinstance(model.init_state(1)[0], (tuple, list))
        self.text = is_text(model)

    def forward(self, inputs: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        if self.text:  # input_ids (b,)
            x = self.model.adapter.embed({"input_ids": inputs[:, None]})[:, 0]  # (b, d)
        else:  # inputs_embeds (b, d): the adapter's embed ran in torch
            x = inputs
        hidden, new = self.model.backbone.step(x, unstack(states, self.n_layers, self.tuple_state))
        out = self.model.adapter.head(hidden) if self.head else hidden  # (b, v) / (b, ...) or (b, d)
        return (out, *stack(new))


class PlainRMSNorm(nn.Module):
    """``nn.RMSNorm`` in plain ops (the TorchScript exporter has no ``aten::rms_norm``)."""

    def __init__(self, norm: nn.RMSNorm):
        super().__init__()
        self.weight = norm.weight
        self.eps = norm.eps if norm.eps is not None else torch.finfo(torch.float32).eps

    def forward(self, x: Tensor) -> Tensor:
        scale = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)  # (..., 1)
        return x * scale * self.weight if self.weight is not None else x * scale


def exportable(model: Any) -> Any:
    """A copy of ``model`` whose modules the exporter converts: RMSNorm in plain ops, and
    sigerlm-moe's ``grouped`` dispatch swapped for its ``masked`` reference (the same function;
    the grouped one's stable ``argsort`` has no ONNX export)."""
    import copy

    model = copy.deepcopy(model).eval()
    try:
        from sigerlm_moe.block import dispatch_grouped, dispatch_masked
    except ImportError:
        dispatch_grouped = dispatch_masked = None
    for module in list(model.modules()):
        if dispatch_grouped is not None and getattr(module, "dispatch", None) is dispatch_grouped:
            module.dispatch = dispatch_masked
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.RMSNorm):
                setattr(module, child_name, PlainRMSNorm(child))
    return model


class HeadGraph(nn.Module):
    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, hidden: Tensor) -> Tensor:
        return self.model.adapter.head(hidden)  # (b, v) or the adapter's outputs (b, ...)


def _export(module: nn.Module, args: tuple, inputs: list[str], outputs: list[str], opset: int, dynamic: dict):
    import onnx

    buffer = io.BytesIO()
    torch.onnx.export(
        module,
        args,
        buffer,
        input_names=inputs,
        output_names=outputs,
        dynamic_axes=dynamic,
        opset_version=opset,
        do_constant_folding=True,
        dynamo=False,
    )
    return onnx.load_from_string(buffer.getvalue())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


class _Part(nn.Module):
    """One module of the step on its own, to find which one the exporter cannot convert."""

    def __init__(self, owner: nn.Module, call: Any):
        super().__init__()
        self.owner, self.call = owner, call  # the owner's weights are parameters, not constants

    def forward(self, *args: Tensor) -> Any:
        return self.call(*args)


def locate_failure(model: Any, opset: int) -> str | None:
    """The first module of the decode step that does not export on its own, as ``"name (Class):
    why"``: the text adapter's embedding, each layer's ``step``, the final norm, the adapter's head."""
    import warnings

    x = torch.zeros(2, model.config.d_model)
    state = model.init_state(2)
    parts: list[tuple[str, Any, Any, tuple]] = []
    if is_text(model):
        ids = torch.zeros(2, 1, dtype=torch.long)
        parts.append(("adapter.embed", model.adapter, lambda i: model.adapter.embed({"input_ids": i}), (ids,)))
    for i, layer in enumerate(model.backbone.layers):
        leaves = state[i] if isinstance(state[i], (tuple, list)) else (state[i],)
        tuple_state = isinstance(state[i], (tuple, list))

        def call(h, *s, layer=layer, tuple_state=tuple_state):
            out, new = layer.step(h, tuple(s) if tuple_state else s[0])
            return (out, *(new if isinstance(new, (tuple, list)) else (new,)))

        parts.append((f"backbone.layers.{i}", layer, call, (x, *leaves)))
    norm = getattr(model.backbone, "norm_f", None)
    if norm is not None:
        parts.append(("backbone.norm_f", norm, norm, (x,)))
    parts.append(("adapter.head", model.adapter, model.adapter.head, (x,)))
    for name, module, call, args in parts:
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(_Part(module, call), args, io.BytesIO(), opset_version=opset, dynamo=False)
        except Exception as exc:
            return f"{name} ({type(module).__name__}): {_first_line(exc)}"
    return None


def export_graphs(model: Any, opset: int) -> dict[str, Any]:
    """``{"step", "body", "head"}``: the three ``onnx.ModelProto`` of the model (fp32). A text
    model's take ``input_ids``, any other adapter's ``inputs_embeds`` (see the module docstring).
    Raises ``ExportError`` naming the module that does not export and why."""
    import warnings

    adapter = getattr(model, "adapter", None)
    use = (getattr(model, "spec", None) or {}).get("adapter") or {}
    use = use.get("use") if isinstance(use, dict) else use
    for method in ("embed", "head"):
        if not callable(getattr(adapter, method, None)):
            raise ExportError(f"adapter {use!r} ({type(adapter).__name__}): has no {method}(), which the export needs")
    layout = state_layout(model)
    n_layers = len(model.backbone.layers)
    d = model.config.d_model
    first, out = input_name(model), output_name(model)
    example = torch.zeros(2, dtype=torch.long) if is_text(model) else torch.zeros(2, d)
    states = tuple(torch.zeros(n_layers, 2, *shape) for shape in layout)
    names = [STATE.format(j) for j in range(len(layout))]
    new_names = [NEW_STATE.format(j) for j in range(len(layout))]
    dynamic = {name: {1: "batch"} for name in names + new_names}
    dynamic.update({first: {0: "batch"}, out: {0: "batch"}, "hidden": {0: "batch"}})
    model = exportable(model)
    graphs = {}
    calls = {
        "step": (StepGraph(model), (example, *states), [first, *names], [out, *new_names]),
        "body": (StepGraph(model, head=False), (example, *states), [first, *names], ["hidden", *new_names]),
        "head": (HeadGraph(model), (torch.zeros(2, d),), ["hidden"], [out]),
    }
    for key, (module, args, inputs, outputs) in calls.items():
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
                graphs[key] = _export(module, args, inputs, outputs, opset, dynamic)
        except Exception as exc:
            where = locate_failure(model, opset) or f"the {key} graph ({type(module).__name__}): {_first_line(exc)}"
            raise ExportError(f"cannot export {where}") from exc
    return graphs


def build_prefill(body: Any, head: Any) -> Any:
    """The prefill graph: ``input_ids (b, l)`` (or ``inputs_embeds (b, l, d)``) + ``state_*`` ->
    ``logits (b, v)`` (or ``outputs``) of the last position + ``new_state_*``; a ``Loop`` over the
    positions runs ``body``, then ``head`` once."""
    import onnx
    from onnx import TensorProto, helper

    first = body.graph.input[0].name  # input_ids or inputs_embeds

    state_names = [i.name for i in body.graph.input if i.name.startswith("state_")]
    new_names = [NEW_STATE.format(j) for j in range(len(state_names))]

    def prefixed(graph: Any, prefix: str, keep: set[str]) -> Any:
        """A copy of ``graph`` with every internal name prefixed (inputs/outputs in ``keep`` stay)."""
        graph = onnx.GraphProto.FromString(graph.SerializeToString())
        rename = lambda n: n if (not n or n in keep) else prefix + n  # noqa: E731
        for node in graph.node:
            node.name = prefix + node.name
            node.input[:] = [rename(n) for n in node.input]
            node.output[:] = [rename(n) for n in node.output]
        for init in graph.initializer:
            init.name = rename(init.name)
        for value in list(graph.value_info):
            value.name = rename(value.name)
        return graph

    body_graph = prefixed(body.graph, "body/", set())
    head_graph = prefixed(head.graph, "head/", {"hidden", head.graph.output[0].name})

    # the loop body: (iteration, condition, states..., hidden) -> (condition, new states..., hidden)
    loop_inputs = [
        helper.make_tensor_value_info("loop/iteration", TensorProto.INT64, []),
        helper.make_tensor_value_info("loop/condition", TensorProto.BOOL, []),
        *[helper.make_tensor_value_info("body/" + n, TensorProto.FLOAT, None) for n in state_names],
        helper.make_tensor_value_info("loop/hidden_in", TensorProto.FLOAT, None),
    ]
    loop_outputs = [
        helper.make_tensor_value_info("loop/condition_out", TensorProto.BOOL, []),
        *[helper.make_tensor_value_info("body/" + n, TensorProto.FLOAT, None) for n in new_names],
        helper.make_tensor_value_info("body/hidden", TensorProto.FLOAT, None),
    ]
    loop_nodes = [
        helper.make_node("Identity", ["loop/condition"], ["loop/condition_out"], name="loop/condition"),
        helper.make_node("Gather", [first, "loop/iteration"], ["body/" + first], axis=1, name="loop/inputs"),
        *body_graph.node,
    ]
    loop_graph = helper.make_graph(loop_nodes, "prefill_body", loop_inputs, loop_outputs)

    d = next(i for i in head.graph.input if i.name == "hidden").type.tensor_type.shape.dim[1].dim_value
    zero = helper.make_tensor("prefill/zero_hidden", TensorProto.FLOAT, [1], [0.0])
    nodes = [
        helper.make_node("Shape", [first], ["prefill/shape"], name="prefill/shape"),  # (b, l) or (b, l, d)
        helper.make_node("Gather", ["prefill/shape", "prefill/one"], ["prefill/length"], axis=0, name="prefill/l"),
        helper.make_node("Slice", ["prefill/shape", "prefill/at0", "prefill/at1"], ["prefill/batch"], name="prefill/b"),
        helper.make_node("Concat", ["prefill/batch", "prefill/d"], ["prefill/hshape"], axis=0, name="prefill/hs"),
        helper.make_node("ConstantOfShape", ["prefill/hshape"], ["prefill/hidden0"], value=zero, name="prefill/h0"),
        helper.make_node(
            "Loop",
            ["prefill/length", "prefill/true", *state_names, "prefill/hidden0"],
            [*new_names, "hidden"],
            body=loop_graph,
            name="prefill/loop",
        ),
        *head_graph.node,
    ]
    consts = [
        helper.make_tensor("prefill/one", TensorProto.INT64, [], [1]),
        helper.make_tensor("prefill/at0", TensorProto.INT64, [1], [0]),
        helper.make_tensor("prefill/at1", TensorProto.INT64, [1], [1]),
        helper.make_tensor("prefill/d", TensorProto.INT64, [1], [d]),
        helper.make_tensor("prefill/true", TensorProto.BOOL, [], [True]),
    ]
    if first == "input_ids":
        sequence_input = helper.make_tensor_value_info(first, TensorProto.INT64, ["batch", "length"])
    else:
        sequence_input = helper.make_tensor_value_info(first, TensorProto.FLOAT, ["batch", "length", d])
    state_inputs = [i for i in body.graph.input if i.name in state_names]
    state_outputs = [o for o in body.graph.output if o.name in new_names]
    graph = helper.make_graph(
        nodes,
        "sigerlm_prefill",
        [sequence_input, *state_inputs],
        [*head.graph.output, *state_outputs],
        initializer=[*consts, *body_graph.initializer, *head_graph.initializer],
    )
    opsets = {o.domain: o.version for o in [*body.opset_import, *head.opset_import]}
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(k, v) for k, v in opsets.items()])
    model.ir_version = body.ir_version
    return model
