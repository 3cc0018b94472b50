"""The lm-evaluation-harness bridge (``pip install "sigerlm-eval[lm-eval]"``): a model ``sigerlm``.

lm-eval finds models in its registry, which importing this module fills; so run it through this
module (which then hands over to lm-eval's own command line)::

    python -m sigerlm_eval.lm_eval_model --model sigerlm --model_args path=MODEL_DIR --tasks TASK ...

or, in Python, ``import sigerlm_eval.lm_eval_model`` before ``lm_eval.simple_evaluate(model="sigerlm", ...)``.
Model arguments: ``path`` (a model folder), ``runtime`` (default torch), ``batch_size``,
``max_gen_toks``. Scoring is the ``multiple-choice`` and ``perplexity`` evaluators' own code:
contexts after ``<|endoftext|>``, each prefilled once and shared by its continuations; rolling
log-likelihoods carry the state across chunks.
"""

from __future__ import annotations

from typing import Any

from lm_eval.api.model import LM
from lm_eval.api.registry import register_model


@register_model("sigerlm")
class SigerLMEval(LM):
    def __init__(
        self, path: str, runtime: str = "torch", batch_size: int | str = 16, max_gen_toks: int = 256, **_: Any
    ):
        super().__init__()
        from sigerlm.assemble import load_model
        from sigerlm.plugins import make_plugin_manager
        from sigerlm_eval.common import start_id
        from sigerlm_eval.scoring import ContinuationScorer

        self.plugin_manager = make_plugin_manager()
        self.model = load_model(path, self.plugin_manager)
        self.tokenizer = self.model.adapter.tokenizer
        self.runtime = self.plugin_manager.get_component("runtimes", runtime).build(self.model, options={})
        self.scorer = ContinuationScorer(self.model, self.runtime)
        self.first = start_id(self.tokenizer)
        self.batch = int(batch_size) if str(batch_size).isdigit() else 16
        self.max_gen_toks = int(max_gen_toks)

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, allow_special=False)

    def loglikelihood(self, requests: list[Any], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        out: list[tuple[float, bool]] = []
        for start in range(0, len(requests), self.batch):
            items = []
            for request in requests[start : start + self.batch]:
                context, continuation = request.args
                items.append(([self.first, *self._encode(context)], [self._encode(continuation)]))
            out += [(s[0].logprob, s[0].greedy) for s in self.scorer.score(items)]
        return out

    def loglikelihood_rolling(self, requests: list[Any], disable_tqdm: bool = False) -> list[float]:
        from sigerlm_eval.scoring import document_nll

        return [-document_nll(self.runtime, [self.first, *self._encode(r.args[0])])[0] for r in requests]

    def generate_until(self, requests: list[Any], disable_tqdm: bool = False) -> list[str]:
        import torch

        from sigerlm_text.generation import GenerationConfig, Generator

        generator = Generator(self.runtime, self.tokenizer)
        out = []
        for request in requests:
            context, kwargs = request.args
            until = kwargs.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            config = GenerationConfig(
                max_new_tokens=int(kwargs.get("max_gen_toks", self.max_gen_toks)),
                temperature=float(kwargs.get("temperature", 0.0) or 0.0),
                stop=until,
            )
            with torch.inference_mode():
                (row,) = generator.generate_ids([[self.first, *self._encode(context)]], config)
            out.append(row.text)
        return out


def main() -> None:
    """lm-eval's command line with the ``sigerlm`` model registered."""
    from lm_eval.__main__ import cli_evaluate

    cli_evaluate()


if __name__ == "__main__":  # pragma: no cover
    main()
