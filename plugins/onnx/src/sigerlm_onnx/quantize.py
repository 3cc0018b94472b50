"""INT8 dynamic and INT4 weight-only quantization of the exported graphs (onnxruntime's tools).

- ``int8``: ``quantize_dynamic`` (weights int8, activations quantized per call). On a CPU
  without VNNI (AVX-512 VNNI or AVX-VNNI) the u8 x s8 product can saturate, so weights use
  ``reduce_range`` (7 bits) there: top-1 agreement 94% -> 99.5% on this machine kind
  (FINDINGS). The choice and the flags it came from are written to the export's metadata.
- ``int4``: ``MatMulNBits`` (blockwise, symmetric). The quantizer only takes ``MatMul``
  nodes, so every ``Gemm`` (a Linear with a bias on 2-D input) is first rewritten to
  ``MatMul`` (+ ``Add``).

The tied head is a ``MatMul`` against its own (transposed, constant-folded) copy of the
embedding, so it is quantized while the embedding lookup (``Gather``) keeps its fp32 table.
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
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    keep = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)
    return count


def quantize_int8(model: Any, reduce_range: bool) -> Any:
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src, dst = Path(tmp) / "in.onnx", Path(tmp) / "out.onnx"
        onnx.save(model, str(src))
        quantize_dynamic(
            str(src), str(dst), weight_type=QuantType.QInt8, reduce_range=reduce_range, op_types_to_quantize=["MatMul"]
        )
        return onnx.load(str(dst))


def quantize_int4(model: Any, block_size: int, accuracy_level: int) -> tuple[Any, int]:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    model = onnx.ModelProto.FromString(model.SerializeToString())
    rewritten = gemm_to_matmul(model)
    quantizer = MatMulNBitsQuantizer(
        model, block_size=block_size, is_symmetric=True, accuracy_level=accuracy_level or None
    )
    quantizer.process()
    return quantizer.model.model, rewritten
