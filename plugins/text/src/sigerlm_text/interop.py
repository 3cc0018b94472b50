"""Handing text models to the Mamba ecosystem and back: ``siger export hf`` (a transformers
folder), ``siger import hf`` (a local ``MambaForCausalLM`` folder into a SigerLM model folder).
``siger export gguf`` (llama.cpp, Ollama) is in ``sigerlm_text.gguf``; both exports start from
``text_parts``, which refuses what the other side cannot run.

Only the model, its tokenizer, the chat format and the end tokens cross over. What SigerLM alone
does (stop strings, hiding ``<thought>``, chat commands, LoRA adapters that are not merged)
stays behind; docs/interop.md lists both sides.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sigerlm.errors import SigerError

#: SigerLM's chat format (sigerlm_text.chat.render, PromptBuilder.build) as a Jinja template
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{%- if message['role'] not in ['system', 'user', 'assistant'] -%}"
    "{{ raise_exception('SigerLM chat roles are system, user and assistant, not ' + message['role']) }}"
    "{%- endif -%}"
    "{{ '<|' + message['role'] + '|>' + message['content'] + '<|end_turn|>' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|assistant|>' }}{%- endif -%}"
)
#: the special tokens given a transformers role; the others are additional special tokens
ROLE_TOKENS = {"eos_token": "<|endoftext|>", "pad_token": "<|pad|>", "unk_token": "<|unk|>", "bos_token": "<|bos|>"}


class InteropError(SigerError):
    """The model cannot cross to (or from) the other format; the message says why."""


@dataclass
class TextParts:
    """What an export needs of a text model: backbone, embedding, head (None: tied), tokenizer."""

    config: Any
    backbone: Any
    embedding: Any
    head: Any
    tokenizer: Any
    source: Path | None


def need(module: str, extra: str) -> None:
    """A one-line error naming the extra to install when ``module`` is missing."""
    import importlib.util

    if importlib.util.find_spec(module) is None:
        raise InteropError(f'this needs the {module} package: pip install "sigerlm-text[{extra}]"')


def text_parts(model: Any, target: str) -> TextParts:
    """The parts of a plain Mamba text model, or an error saying why ``target`` cannot run it."""
    from sigerlm_text.model import TextAdapter

    adapter = getattr(model, "adapter", None)
    if not isinstance(adapter, TextAdapter):
        use = (getattr(model, "spec", {}).get("adapter") or {}).get("use")
        raise InteropError(f"{target} runs token models only; this model's adapter is {use!r}, not 'text'")
    if getattr(model, "saver", None) is not None:
        raise InteropError(f"{target}: the model carries an unmerged adapter; merge it first (`siger lora merge`)")
    for i, spec in enumerate(model.spec.get("blocks") or [{"use": model.config.block}] * model.config.n_layers):
        if str(spec["use"]).split(":")[-1] != "ssm" or len(spec) > 1:
            raise InteropError(
                f"{target} has only the Mamba block; layer {i} uses {spec['use']!r} "
                "(MoE and other blocks do not convert)"
            )
    config = model.config
    if config.norm_type != "rmsnorm":
        raise InteropError(f"{target}'s Mamba uses RMSNorm; this model uses {config.norm_type}")
    if adapter.tokenizer is None or adapter.tokenizer.kind != "bpe":
        kind = adapter.tokenizer.kind if adapter.tokenizer is not None else "none"
        raise InteropError(f"{target} needs the model's BPE tokenizer (tokenizer.json); this model has {kind}")
    head = None if adapter.lm_head is None else adapter.lm_head.weight.detach()
    return TextParts(
        config,
        model.backbone,
        adapter.embedding.weight.detach(),
        head,
        adapter.tokenizer,
        getattr(model, "source", None),
    )


def end_token_ids(tokenizer: Any) -> list[int]:
    from sigerlm_text.generation import END_TOKENS

    return [tokenizer.token_id(t) for t in END_TOKENS]


def hf_tokenizer(tokenizer: Any) -> Any:
    """A ``PreTrainedTokenizerFast`` of a SigerLM BPE, with the special tokens and chat template."""
    from transformers import PreTrainedTokenizerFast

    others = [t for t in tokenizer.special_tokens if t not in ROLE_TOKENS.values()]
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer.backend,
        chat_template=CHAT_TEMPLATE,
        additional_special_tokens=others,
        clean_up_tokenization_spaces=False,
        model_input_names=["input_ids"],
        **ROLE_TOKENS,
    )


def export_hf(model: Any, out: Path, options: Any) -> Path:
    """Write a folder transformers loads with no SigerLM installed (``AutoModelForCausalLM``,
    ``AutoTokenizer``): config.json, model.safetensors, tokenizer files, generation_config.json
    and a model card. Returns ``out``."""
    need("transformers", "hf")
    import torch
    from transformers import GenerationConfig

    from sigerlm.io import atomic_write
    from sigerlm_text.hf import to_hf

    parts = text_parts(model, "transformers")
    tokenizer = parts.tokenizer
    hf = to_hf(parts.backbone, parts.embedding, head=parts.head)
    ends, pad = end_token_ids(tokenizer), tokenizer.pad_id
    eos, bos = tokenizer.token_id(ROLE_TOKENS["eos_token"]), tokenizer.token_id(ROLE_TOKENS["bos_token"])
    hf.config.update({"eos_token_id": eos, "pad_token_id": pad, "bos_token_id": bos})  # as the tokenizer's
    hf.generation_config = GenerationConfig(eos_token_id=ends, pad_token_id=pad, bos_token_id=None)
    hf = hf.to(getattr(torch, options.dtype))
    out = Path(out)
    hf.save_pretrained(out)
    hf_tokenizer(tokenizer).save_pretrained(out)
    atomic_write(out / "README.md", model_card(parts, hf, options))
    return out


def run_record(source: Path | None) -> dict[str, Any]:
    """What the run that wrote a model folder recorded about it: validation perplexity (the
    run's metrics.json), the data (manifest.resolved.yaml), a merged LoRA adapter."""
    found: dict[str, Any] = {}
    if source is None:
        return found
    source = Path(source)
    merged = source / "merged_adapter.json"
    if merged.is_file():
        found["merged_adapter"] = json.loads(merged.read_text(encoding="utf-8"))
    for run in (source, source.parent):
        metrics = run / "metrics.json"
        if "valid_perplexity" not in found and metrics.is_file():
            for step in json.loads(metrics.read_text(encoding="utf-8")).get("steps", []):
                results = step.get("results") or {}
                model = results.get("model")
                if "valid_perplexity" in results and (model is None or Path(model).name == source.name):
                    found.update({k: results[k] for k in ("valid_perplexity", "unigram_perplexity") if k in results})
        manifest = run / "manifest.resolved.yaml"
        if "data" not in found and manifest.is_file():
            import yaml

            data = (yaml.safe_load(manifest.read_text(encoding="utf-8")) or {}).get("data")
            if data:
                found["data"] = data
    return found


def model_card(parts: TextParts, hf: Any, options: Any) -> str:
    """README.md: identity, shape, data, licence, measured perplexity, and how to use it."""
    import yaml

    config, tokenizer = parts.config, parts.tokenizer
    record = run_record(parts.source)
    source = parts.source
    name = options.name or (source.parent.name if source.name == "model" else source.name) if source else "sigerlm"
    params = sum(p.numel() for p in hf.parameters())
    if "valid_perplexity" in record:
        ppl = f"Validation perplexity **{record['valid_perplexity']:.2f}**, as measured by the training run"
        if "unigram_perplexity" in record:
            ppl += f" (a unigram model of the training data: {record['unigram_perplexity']:.1f})"
        ppl += "."
    else:
        ppl = "Not recorded: the folder holds no run metrics (`siger eval` measures it)."
    data = (
        "```yaml\n" + yaml.safe_dump(record["data"], sort_keys=False) + "```"
        if "data" in record
        else "Not recorded in the model folder."
    )
    merged = ""
    if "merged_adapter" in record:
        merged = f"\nA LoRA adapter is merged into these weights: `{json.dumps(record['merged_adapter'])[:300]}`.\n"
    return f"""---
license: {options.license}
library_name: transformers
pipeline_tag: text-generation
tags: [mamba, sigerlm]
---

# {name}

A Mamba-1 language model trained with SigerLM (identity
`{config.identity}`), exported by `siger export hf`: {params:,} parameters, d_model {config.d_model},
{config.n_layers} layers, d_state {config.d_state}, expand {config.expand}, vocabulary {hf.config.vocab_size}
({"tied" if parts.head is None else "separate"} LM head), tokenizer sha256 `{tokenizer.hash[:16]}...`.
{merged}
## Use

```python
from transformers import AutoModelForCausalLM, AutoTokenizer

tok = AutoTokenizer.from_pretrained("PATH")
model = AutoModelForCausalLM.from_pretrained("PATH")
ids = tok.apply_chat_template([{{"role": "user", "content": "Hello"}}], add_generation_prompt=True,
                              return_tensors="pt", return_dict=True)["input_ids"]
print(tok.decode(model.generate(ids, max_new_tokens=32)[0, ids.shape[1]:]))
```

Chat format: `<|system|>...<|end_turn|><|user|>...<|end_turn|><|assistant|>...<|end_turn|>`;
generation ends at `<|eos|>`, `<|end_turn|>` or `<|endoftext|>` (generation_config.json).

## Evaluation

{ppl}

## Data

{data}

## Licence

{options.license}. The weights' licence follows from the data they were trained on.
"""


def import_hf(source: Path, out: Path) -> dict[str, Any]:
    """A SigerLM model folder from a local ``MambaForCausalLM`` folder with a ``tokenizer.json``.
    SigerLM's special tokens the tokenizer lacks are added (new embedding rows where the
    vocabulary has no room: the mean embedding). Returns what was done, for the report."""
    need("transformers", "hf")
    import torch
    from tokenizers import AddedToken, Tokenizer
    from transformers import MambaForCausalLM

    from sigerlm_text.hf import from_hf
    from sigerlm_text.model import text_model
    from sigerlm_text.tokenizers.base import SPECIAL_TOKENS
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    source = Path(source)
    if not (source / "config.json").is_file():
        raise InteropError(f"{source} holds no config.json: not a transformers model folder")
    model_type = json.loads((source / "config.json").read_text(encoding="utf-8")).get("model_type")
    if model_type != "mamba":
        raise InteropError(f"{source} is a {model_type!r} model; `siger import hf` reads Mamba folders ('mamba')")
    if not (source / "tokenizer.json").is_file():
        raise InteropError(f"{source} holds no tokenizer.json (a fast tokenizer), which the SigerLM model needs")
    hf = MambaForCausalLM.from_pretrained(source, local_files_only=True, dtype=torch.float32).eval()
    backbone, embedding = from_hf(hf)
    head = None if hf.config.tie_word_embeddings else hf.lm_head.weight.detach().clone()
    tok = Tokenizer.from_file(str(source / "tokenizer.json"))
    added = {t.content for t in tok.get_added_tokens_decoder().values()}
    vocab = tok.get_vocab()
    new = [t for t in SPECIAL_TOKENS if t not in vocab]
    promoted = [t for t in SPECIAL_TOKENS if t in vocab and t not in added]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in new + promoted])
    tokenizer = BPETokenizer(tok)
    rows = embedding.shape[0]
    vocab_size = max(rows, tokenizer.vocab_size)
    if vocab_size > rows:
        grow = embedding.mean(0, keepdim=True).expand(vocab_size - rows, -1)
        embedding = torch.cat([embedding, grow])
        head = None if head is None else torch.cat([head, head.mean(0, keepdim=True).expand(vocab_size - rows, -1)])
    model = text_model(backbone.config, vocab_size, tokenizer, tie_embeddings=head is None)
    with torch.no_grad():
        model.backbone.load_state_dict(backbone.state_dict())
        model.adapter.embedding.weight.copy_(embedding)
        if head is not None:
            model.adapter.lm_head.weight.copy_(head)
    model.save(out)
    return {
        "out": str(out),
        "added": new,
        "made_special": promoted,
        "vocab_size": vocab_size,
        "new_rows": vocab_size - rows,
        "parameters": sum(p.numel() for p in model.parameters()),
    }
