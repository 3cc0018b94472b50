"""The installed distribution exposes its hooks module, and its hooks match the specs."""

from sigerlm_testkit import assert_imports_without_torch, check_entry_point


def test_entry_point_loads_and_matches_specs():
    pm = check_entry_point("eval", "sigerlm-eval")
    assert pm.records["eval"].module == "sigerlm_eval.hooks"
    names = {c.name for c in pm.components["evaluators"]}
    assert {"perplexity", "bleu", "chrf", "rouge", "diversity", "multiple-choice", "generation-checks"} <= names


def test_hooks_module_does_not_import_torch():
    assert_imports_without_torch("sigerlm_eval.hooks")
