"""The ``generation-checks`` evaluator: the original harness fixtures. Each row's prompt is
answered greedily and checked: at least ``min_chars`` characters, every ``expected_contains``
string present and no ``expected_not_contains`` one (case-insensitive), and a repetition ratio
(1 - distinct words / words) at most ``max_repetition_ratio``. Reports the share of rows that
pass every check and, per check, how many rows failed it."""

from __future__ import annotations

from typing import Any

from sigerlm_eval import metrics
from sigerlm_eval.common import EvalDataError, generate, read_rows, record_details, text_field

CHECKS = ("min_chars", "expected_contains", "expected_not_contains", "max_repetition_ratio")


def validate(where: str, row: dict[str, Any]) -> None:
    text_field(where, row, "prompt")
    for key in ("expected_contains", "expected_not_contains"):
        value = row.get(key)
        if value is not None and (not isinstance(value, list) or not all(isinstance(s, str) for s in value)):
            raise EvalDataError(f"{where}: '{key}' must be a list of texts")
    for key in ("min_chars", "max_repetition_ratio"):
        value = row.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
            raise EvalDataError(f"{where}: '{key}' must be a number, got {value!r}")


def evaluate(run: Any, options: Any) -> dict[str, Any]:
    from sigerlm.assemble import current_model

    rows = list(read_rows(options.files, options.limit))
    for where, row in rows:
        validate(where, row)
    if not rows:
        raise EvalDataError(f"generation-checks: no rows in {', '.join(map(str, options.files))}")
    model = current_model(run)
    answers = generate(run, model, [row["prompt"] for _, row in rows], options)
    failed = {name: 0 for name in CHECKS}
    passed = 0
    details = []
    for (where, row), answer in zip(rows, answers, strict=True):
        failures = metrics.check(row, answer)
        passed += not failures
        for name in failures:
            failed[name] += 1
        details.append({"where": where, "id": row.get("id"), "answer": answer, "failed": failures})
    record_details(run, details)
    return {
        "pass_rate": passed / len(rows),
        "passed": passed,
        "n": len(rows),
        **{f"failed_{name}": count for name, count in failed.items()},
    }
