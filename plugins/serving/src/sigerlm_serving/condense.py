"""Condensing long tool output before it is stored in memory (torch-free).

Keeps the head and the tail, every line that reports an error or a warning, and lines that
carry numbers or file paths; collapses repeated lines (equal once digits are ignored) into one
with a count, and marks what was left out.
"""

from __future__ import annotations

import re

_IMPORTANT = re.compile(
    r"error|exception|traceback|fail|fatal|warn|denied|refused|timeout|panic|abort|exit code|"
    r"not found|invalid|\bE\d{3,}",
    re.I,
)
_PATH = re.compile(
    r"(?:[A-Za-z]:\\|~?/)?(?:[\w.\-]+/)+[\w.\-]+|\b[\w\-]+\.(?:py|js|ts|json|ya?ml|toml|txt|csv|log|md|"
    r"c|h|cpp|rs|go|java|sh|sql|html)\b"
)
_NUMBER = re.compile(r"\d")


def condense(text: str, head: int = 8, tail: int = 8, max_kept: int = 60) -> str:
    lines = text.splitlines()
    if len(lines) <= head + tail:
        return _collapse_repeats(list(enumerate(lines)), lines) if lines else text
    keep = set(range(head)) | set(range(len(lines) - tail, len(lines)))
    ranked = []
    for i, line in enumerate(lines[head : len(lines) - tail], start=head):
        if _IMPORTANT.search(line):
            ranked.append((0, i))
        elif _PATH.search(line):
            ranked.append((1, i))
        elif _NUMBER.search(line):
            ranked.append((2, i))
    # the most important first, then earliest; identical lines count once
    seen: set[str] = set()
    for _, i in sorted(ranked):
        if len(keep) >= max_kept + head + tail:
            break
        key = _shape(lines[i])
        if key in seen:
            continue
        seen.add(key)
        keep.add(i)
    return _collapse_repeats([(i, lines[i]) for i in sorted(keep)], lines)


def _shape(line: str) -> str:
    return re.sub(r"\d+", "#", line.strip())


def _collapse_repeats(kept: list[tuple[int, str]], lines: list[str]) -> str:
    """Render kept lines; gaps say how many lines were left out, and a run of lines of the same
    shape is written once with its count."""
    out: list[str] = []
    previous = -1
    i = 0
    while i < len(kept):
        index, line = kept[i]
        if index > previous + 1:
            out.append(f"[... {index - previous - 1} lines omitted ...]")
        # count the run of same-shaped lines in the original text starting here
        run = 1
        while index + run < len(lines) and _shape(lines[index + run]) == _shape(line) and line.strip():
            run += 1
        if run > 2:
            out.append(f"{line}  [repeated {run}x]")
            previous = index + run - 1
            while i < len(kept) and kept[i][0] <= previous:
                i += 1
            continue
        out.append(line)
        previous = index
        i += 1
    if previous < len(lines) - 1:
        out.append(f"[... {len(lines) - 1 - previous} lines omitted ...]")
    return "\n".join(out)
