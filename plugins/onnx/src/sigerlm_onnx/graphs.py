"""The ONNX graphs of a text model: one decode step, and a prefill of any length built from it.

Glossary: ``b`` batch, ``l`` sequence length, ``d`` model width, ``v`` vocabulary, ``L`` layers.

A model's decode state is one tuple of tensors per layer (``(conv, ssm)`` for the SSM block);
the graphs take and return it *stacked*: leaf ``j`` of every layer in one tensor
``state_j`` ``(L, b, ...)``. Three graphs are exported from PyTorch:

- ``step``: ``input_ids (b,)`` + ``state_*`` -> ``logits (b, v)`` + ``new_state_*``;
- ``body``: the same step without the head: -> ``hidden (b, d)`` + ``new_state_*``;
- ``head``: ``hidden (b, d)`` -> ``logits (b, v)``.

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

    def forward(self, input_ids: Tensor, *states: Tensor) -> tuple[Tensor, ...]:
        x = self.model.adapter.embed({"input_ids": input_ids[:, None]})[:, 0]  # (b, d)
        hidden, new = self.model.backbone.step(x, unstack(states, self.n_layers, self.tuple_state))
        out = self.model.adapter.head(hidden) if self.head else hidden  # (b, v) or (b, d)
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
    """A copy of ``model`` whose modules the exporter converts (RMSNorm in plain ops)."""
    import copy

    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if isinstance(child, nn.RMSNorm):
                setattr(module, child_name, PlainRMSNorm(child))
    return model


class HeadGraph(nn.Module):
    def __init__(self, model: Any):
        super().__init__()
        self.model = model

    def forward(self, hidden: Tensor) -> Tensor:
        return self.model.adapter.head(hidden)  # (b, v)


def _export(module: nn.Module, args: tuple, inputs: list[str], outputs: list[str], opset: int, dynamic: dict):
    import onnx

    buffer = io.BytesIO()
    try:
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
    except Exception as exc:  # the exporter's own message names the op it could not convert
        raise ExportError(f"{type(module).__name__}: torch.onnx.export failed: {exc}") from exc
    return onnx.load_from_string(buffer.getvalue())


def export_graphs(model: Any, opset: int) -> dict[str, Any]:
    """``{"step", "body", "head"}``: the three ``onnx.ModelProto`` of a text model (fp32)."""
    import warnings

    if not hasattr(getattr(model, "adapter", None), "embedding"):
        use = (getattr(model, "spec", {}).get("adapter") or {}).get("use")
        raise ExportError(f"adapter {use!r}: only the text adapter (input_ids -> logits) exports so far")
    layout = state_layout(model)
    n_layers = len(model.backbone.layers)
    ids = torch.zeros(2, dtype=torch.long)
    states = tuple(torch.zeros(n_layers, 2, *shape) for shape in layout)
    names = [STATE.format(j) for j in range(len(layout))]
    new_names = [NEW_STATE.format(j) for j in range(len(layout))]
    dynamic = {name: {1: "batch"} for name in names + new_names}
    dynamic.update({"input_ids": {0: "batch"}, "logits": {0: "batch"}, "hidden": {0: "batch"}})
    model = exportable(model)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer notes
        step = _export(StepGraph(model), (ids, *states), ["input_ids", *names], ["logits", *new_names], opset, dynamic)
        body = _export(
            StepGraph(model, head=False), (ids, *states), ["input_ids", *names], ["hidden", *new_names], opset, dynamic
        )
        head = _export(
            HeadGraph(model), (torch.zeros(2, model.config.d_model),), ["hidden"], ["logits"], opset, dynamic
        )
    return {"step": step, "body": body, "head": head}


def build_prefill(body: Any, head: Any) -> Any:
    """The prefill graph: ``input_ids (b, l)`` + ``state_*`` -> ``logits (b, v)`` of the last
    position + ``new_state_*``; a ``Loop`` over the positions runs ``body``, then ``head`` once."""
    import onnx
    from onnx import TensorProto, helper

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
    head_graph = prefixed(head.graph, "head/", {"hidden", "logits"})

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
        helper.make_node("Gather", ["input_ids", "loop/iteration"], ["body/input_ids"], axis=1, name="loop/ids"),
        *body_graph.node,
    ]
    loop_graph = helper.make_graph(loop_nodes, "prefill_body", loop_inputs, loop_outputs)

    d = next(i for i in head.graph.input if i.name == "hidden").type.tensor_type.shape.dim[1].dim_value
    zero = helper.make_tensor("prefill/zero_hidden", TensorProto.FLOAT, [1], [0.0])
    nodes = [
        helper.make_node("Shape", ["input_ids"], ["prefill/shape"], name="prefill/shape"),  # (b, l)
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
    state_inputs = [i for i in body.graph.input if i.name in state_names]
    state_outputs = [o for o in body.graph.output if o.name in new_names]
    graph = helper.make_graph(
        nodes,
        "sigerlm_prefill",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "length"]), *state_inputs],
        [*head.graph.output, *state_outputs],
        initializer=[*consts, *body_graph.initializer, *head_graph.initializer],
    )
    opsets = {o.domain: o.version for o in [*body.opset_import, *head.opset_import]}
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(k, v) for k, v in opsets.items()])
    model.ir_version = body.ir_version
    return model
