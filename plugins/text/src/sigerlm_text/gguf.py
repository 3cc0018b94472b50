"""``siger export gguf``: a SigerLM text model as one GGUF file for llama.cpp (and Ollama, LM
Studio), written with the ``gguf`` package, the llama.cpp project's own writer.

The file is what llama.cpp's ``convert_hf_to_gguf.py`` writes for a transformers Mamba: arch
``mamba``, tensors under llama.cpp's names (``A = -exp(A_log)`` stored, the conv weight
squeezed to 2-D), the tied head as ``token_embd`` alone. The tokenizer goes in as llama.cpp's
``gpt2`` BPE (tokens, merges, types; special tokens as control tokens) with the pre-tokenizer
``gpt-2``: our ByteLevel BPE splits text with GPT-2's pattern, and llama.cpp's own converter
rejects a freshly trained BPE as "not recognized". 2-D weights take ``--type``; norms, biases,
A, D and the conv weight stay f32, as llama.cpp's converter and quantizer keep them; a weight
whose rows are not whole quantization blocks falls back to f16, as the converter does.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sigerlm_text.interop import CHAT_TEMPLATE, InteropError, end_token_ids, need, text_parts

#: llama.cpp file types (LlamaFileType) of --type
FILE_TYPES = {"f32": "ALL_F32", "f16": "MOSTLY_F16", "q8_0": "MOSTLY_Q8_0", "q4_0": "MOSTLY_Q4_0"}
#: what Ollama needs besides the file: the chat format and the end tokens
MODELFILE = '''FROM ./{file}
TEMPLATE """{{{{- range .Messages }}}}<|{{{{ .Role }}}}|>{{{{ .Content }}}}<|end_turn|>{{{{ end }}}}<|assistant|>"""
PARAMETER stop "<|end_turn|>"
PARAMETER stop "<|eos|>"
PARAMETER stop "<|endoftext|>"
'''


def check_tokenizer(tokenizer: Any) -> dict[str, Any]:
    """The tokenizer.json of a BPE llama.cpp's ``gpt2``/``gpt-2`` tokenizer reproduces, or an error."""
    data = json.loads(tokenizer.backend.to_str())
    pre, model = data.get("pre_tokenizer") or {}, data.get("model") or {}
    same = (
        model.get("type") == "BPE"
        and data.get("normalizer") is None
        and pre.get("type") == "ByteLevel"
        and not pre.get("add_prefix_space")
        and pre.get("use_regex", True)
    )
    if not same:
        raise InteropError(
            "llama.cpp would split this tokenizer's text differently: GGUF export needs a ByteLevel BPE without "
            f"normalizer or prefix space (this one: model {model.get('type')}, pre-tokenizer {pre.get('type')}, "
            f"normalizer {(data.get('normalizer') or {}).get('type')})"
        )
    return data


def vocabulary(tokenizer: Any, rows: int) -> tuple[list[str], list[int], list[str]]:
    """Tokens (one per embedding row), their llama.cpp types and the merges."""
    from gguf import TokenType

    data = check_tokenizer(tokenizer)
    vocab = tokenizer.backend.get_vocab(with_added_tokens=True)
    by_id = {i: t for t, i in vocab.items()}
    added = {t["content"]: t["special"] for t in data.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(rows):
        token = by_id.get(i)
        if token is None:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
        else:
            tokens.append(token)
            kind = TokenType.NORMAL if token not in added else TokenType.CONTROL
            types.append(kind if added.get(token, True) else TokenType.USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in data["model"].get("merges", [])]
    return tokens, types, merges


def export_gguf(model: Any, out: Path, options: Any) -> Path:
    """Write ``out`` (a .gguf file, replaced atomically); print an Ollama Modelfile with
    ``options.modelfile``. Returns ``out``."""
    need("gguf", "gguf")
    import gguf
    import numpy as np
    import torch

    parts = text_parts(model, "llama.cpp")
    config, tokenizer = parts.config, parts.tokenizer
    tensors = {f"backbone.{k}": v for k, v in parts.backbone.state_dict().items()}
    tensors["backbone.embeddings.weight"] = parts.embedding
    if parts.head is not None:
        tensors["lm_head.weight"] = parts.head
    names = gguf.TensorNameMap(gguf.MODEL_ARCH.MAMBA, config.n_layers)
    tokens, types, merges = vocabulary(tokenizer, parts.embedding.shape[0])
    ftype = getattr(gguf.LlamaFileType, FILE_TYPES[options.type])
    wanted = {"f32": gguf.GGMLQuantizationType.F32, "f16": gguf.GGMLQuantizationType.F16}.get(
        options.type, getattr(gguf.GGMLQuantizationType, options.type.upper())
    )

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    writer = gguf.GGUFWriter(str(tmp), "mamba")
    writer.add_name(parts.source.name if parts.source else "sigerlm")
    writer.add_context_length(2**20)  # no position limit; llama.cpp's converter writes the same
    writer.add_embedding_length(config.d_model)
    writer.add_feed_forward_length(0)
    writer.add_head_count(0)
    writer.add_block_count(config.n_layers)
    writer.add_ssm_conv_kernel(config.d_conv)
    writer.add_ssm_inner_size(config.d_model * config.expand)
    writer.add_ssm_state_size(config.d_state)
    writer.add_ssm_time_step_rank(config.dt_rank_value)
    writer.add_layer_norm_rms_eps(config.norm_eps)
    writer.add_ssm_dt_b_c_rms(False)
    writer.add_file_type(ftype)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre("gpt-2")
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    ends = end_token_ids(tokenizer)  # <|eos|>, <|end_turn|>, <|endoftext|>
    writer.add_bos_token_id(tokenizer.token_id("<|bos|>"))
    writer.add_eos_token_id(ends[2])
    writer.add_eot_token_id(ends[1])
    writer.add_eom_token_id(ends[0])
    writer.add_unk_token_id(tokenizer.token_id("<|unk|>"))
    writer.add_pad_token_id(tokenizer.pad_id)
    writer.add_sep_token_id(tokenizer.token_id("<|sep|>"))
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.add_chat_template(CHAT_TEMPLATE)
    for name, tensor in tensors.items():
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise InteropError(f"llama.cpp's mamba has no tensor for {name}")
        data = tensor.detach().to(torch.float32)
        if name.endswith(".A_log"):
            data = -torch.exp(data)
        if name.endswith(".conv1d.weight"):
            data = data.squeeze(1)  # (d_inner, 1, d_conv) -> (d_inner, d_conv)
        array = data.numpy()
        qtype = wanted if array.ndim == 2 and new.endswith(".weight") and ".ssm_conv1d." not in new else None
        if qtype is None or qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(new, array)
            continue
        try:
            writer.add_tensor(new, gguf.quants.quantize(array, qtype), raw_dtype=qtype)
        except gguf.QuantError:  # rows that are not whole blocks (dt_proj's, at small ranks)
            writer.add_tensor(new, array.astype(np.float16), raw_dtype=gguf.GGMLQuantizationType.F16)
    try:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    if options.modelfile:
        print(MODELFILE.format(file=out.name), end="")
    return out
