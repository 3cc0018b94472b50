"""sigerlm-eval: evaluators (perplexity, BLEU/chrF++, ROUGE, diversity, multiple choice,
generation checks), the ``evaluate`` step, ``siger eval`` and an lm-evaluation-harness bridge."""

__version__ = "0.1.0"
