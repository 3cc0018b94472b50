"""INT8 dynamic and INT4 weight-only quantization of the exported graphs (onnxruntime's tools).

- ``int8``: ``quantize_dynamic`` (weights int8, activations quantized per call). On a CPU
  without VNNI (AVX-512 VNNI or AVX-VNNI) the u8 x s8 product can saturate, so weights use
  ``reduce_range`` (7 bits) there: top-1 agreement 94% -> 99.5% on this machine kind
  (FINDINGS). The choice and the flags it came from are written to the export's metadata.
- ``int4``: ``MatMulNBits`` (blockwise, symmetric). The quantizer only takes ``MatMul``
  nodes, so every ``Gemm`` (a Linear with a bias on 2-D input) is first rewritten to
  ``MatMul`` (+ ``Add``).

The tied head is a ``MatMul`` against its own (transposed, constant-folded) copy of the
embedding, so it is quantized with the other MatMuls. The embedding lookup (``Gather`` on the
``(v, d)`` table, most of a small model's bytes) is quantized too unless ``embedding=False``:

- ``int8``: per-row symmetric int8 (``quantize_dynamic`` would give the whole table one scale):
  ``Gather(int8 table) -> Cast -> Mul(Gather(row scales))``, standard ops;
- ``int4``: onnxruntime's ``GatherBlockQuantized`` (com.microsoft; 4-bit blocks of
  ``block_size`` along ``d``, symmetric), through the same ``MatMulNBitsQuantizer``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any


def cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def int8_reduce_range(flags: set[str] | None = None) -> tuple[bool, str]:
    """``(reduce_range, why)``: 7-bit weights unless the CPU has VNNI."""
    flags = cpu_flags() if flags is None else flags
    vnni = sorted(flags & {"avx512_vnni", "avx_vnni", "amx_int8"})
    if vnni:
        return False, f"CPU has {', '.join(vnni)}: full-range int8 weights"
    has = sorted(flags & {"avx2", "avx512f"}) or ["no AVX2"]
    return True, f"CPU has {', '.join(has)} but no VNNI: reduce_range (7-bit weights) avoids u8 x s8 saturation"


def gemm_to_matmul(model: Any) -> int:
    """Rewrite every ``Gemm`` whose weight is an initializer to ``MatMul`` (+ ``Add``) in place;
    returns how many. ``transB=1`` weights are stored transposed."""
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes, count = [], 0
    for node in graph.node:
        attrs = {a.name: a for a in node.attribute}
        alpha = attrs["alpha"].f if "alpha" in attrs else 1.0
        beta = attrs["beta"].f if "beta" in attrs else 1.0
        trans_a = attrs["transA"].i if "transA" in attrs else 0
        if node.op_type != "Gemm" or node.input[1] not in inits or trans_a or alpha != 1.0 or beta != 1.0:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(inits[node.input[1]])
        if "transB" in attrs and attrs["transB"].i:
            weight = weight.T.copy()
        name = node.input[1] + "/matmul"
        graph.initializer.append(numpy_helper.from_array(weight, name))
        out = node.output[0]
        has_bias = len(node.input) > 2 and node.input[2]
        product = out + "/product" if has_bias else out
        nodes.append(helper.make_node("MatMul", [node.input[0], name], [product], name=node.name + "/matmul"))
        if has_bias:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [out], name=node.name + "/bias"))
        count += 1
    replace_nodes(graph, nodes)
    return count


def embedding_gathers(model: Any) -> list[Any]:
    """The ``Gather`` nodes that look rows up in a float ``(v, d)`` initializer (the embedding)."""
    from onnx import TensorProto

    inits = {i.name: i for i in model.graph.initializer}
    return [
        node
        for node in model.graph.node
        if node.op_type == "Gather"
        and node.input[0] in inits
        and inits[node.input[0]].data_type == TensorProto.FLOAT
        and len(inits[node.input[0]].dims) == 2
        and inits[node.input[0]].dims[1] > 1  # not a (v, 1) column of row scales
        and not any(a.name == "axis" and a.i != 0 for a in node.attribute)
    ]


def quantize_gather_int8(model: Any) -> int:
    """Every embedding ``Gather`` to per-row symmetric int8, in place; returns how many."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    targets = {n.name for n in embedding_gathers(model)}
    nodes, count = [], 0
    for node in graph.node:
        if not node.name or node.name not in targets:
            nodes.append(node)
            continue
        table = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)  # (v, d)
        scale = np.abs(table).max(axis=1, keepdims=True) / 127.0  # (v, 1)
        scale[scale == 0] = 1.0
        q = np.clip(np.rint(table / scale), -127, 127).astype(np.int8)
        name, out = node.input[0], node.output[0]
        graph.initializer.extend(
            [numpy_helper.from_array(q, name + "/int8"), numpy_helper.from_array(scale, name + "/row_scale")]
        )
        ids = node.input[1]
        nodes += [
            helper.make_node("Gather", [name + "/int8", ids], [out + "/int8"], name=node.name + "/int8"),
            helper.make_node("Cast", [out + "/int8"], [out + "/float"], to=TensorProto.FLOAT, name=node.name + "/cast"),
            helper.make_node("Gather", [name + "/row_scale", ids], [out + "/scale"], name=node.name + "/scale"),
            helper.make_node("Mul", [out + "/float", out + "/scale"], [out], name=node.name + "/dequantize"),
        ]
        count += 1
    replace_nodes(graph, nodes)
    return count


def quantize_int8(model: Any, reduce_range: bool, embedding: bool = True) -> Any:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, str(src))
        quantize_dynamic(
            str(src), str(dst), weight_type=QuantType.QInt8, reduce_range=reduce_range, op_types_to_quantize=["MatMul"]
        )
        model = onnx.load(str(dst))
    if embedding:
        quantize_gather_int8(model)
    return model


def quantize_int4(model: Any, block_size: int, accuracy_level: int, embedding: bool = True) -> tuple[Any, int]:
    import numpy as np
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.ModelProto.FromString(model.SerializeToString())
    rewritten = gemm_to_matmul(model)
    # every MatMul; of the Gathers only the embedding's (an int64 shape constant is a Gather too)
    include = [n.name for n in embedding_gathers(model)] if embedding else []
    quantizer = MatMulNBitsQuantizer(
        model,
        block_size=block_size,
        is_symmetric=True,
        accuracy_level=accuracy_level or None,
        nodes_to_include=include or None,
        op_types_to_quantize=("MatMul",),
        quant_axes=(("MatMul", 0), ("Gather", 1)),
    )
    with np.errstate(divide="ignore", invalid="ignore"):  # an all-zero block: 0 / 0, then np.where picks 0
        quantizer.process()
    return quantizer.model.model, rewritten


def replace_nodes(graph, nodes: list) -> None:
    """Give ``graph`` these nodes instead of its own and drop the initializers no node reads any more."""
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
