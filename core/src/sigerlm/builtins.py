"""Core's own plugin (registered as ``core``): the components that ship with ``sigerlm``.

For now these are the test kit's components, so that a manifest runs with core alone:
block ``identity``, adapter ``random-embedding``, dataset ``random-tokens`` and step
``record-calls``. The SSM block, the ``train`` step and the ``torch`` runtime join them as the
backbone and training land.
"""

from __future__ import annotations

from sigerlm.hookspecs import hookimpl
from sigerlm.testing import components as kit


@hookimpl
def register_blocks(register):
    register("identity", kit.identity_block, options=kit.IdentityBlockOptions)


@hookimpl
def register_adapters(register):
    register("random-embedding", kit.random_embedding, options=kit.RandomEmbeddingOptions)


@hookimpl
def register_datasets(register):
    register("random-tokens", kit.random_tokens, options=kit.RandomTokensOptions)


@hookimpl
def register_steps(register):
    register("record-calls", kit.record_calls, options=kit.RecordCallsOptions)
