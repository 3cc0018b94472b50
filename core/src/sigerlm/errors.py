"""Exceptions SigerLM raises on purpose. Each message says what is wrong and how to fix it."""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from dataclasses import dataclass


class SigerError(Exception):
    """Base class: the CLI prints these as clean messages instead of tracebacks."""

    exit_code = 1


class ComponentError(SigerError):
    """A component could not be registered or found."""


class PluginLoadError(SigerError):
    """A plugin that is needed (or any plugin, under ``SIGER_STRICT_PLUGINS=1``) failed to load."""


class RunFolderError(SigerError):
    """The run folder holds something that a run must not overwrite."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a manifest: where it is, what is wrong, how to fix it."""

    path: str
    message: str
    hint: str | None = None
    line: int | None = None

    def render(self, source: str | None = None) -> str:
        where = source or "<manifest>"
        if self.line is not None:
            where += f":{self.line}"
        text = f"{where}: {self.path or '<root>'}: {self.message}"
        if self.hint:
            text += f" ({self.hint})"
        return text


class ManifestError(SigerError):
    """A manifest is invalid. Carries every problem found, not just the first."""

    exit_code = 2

    def __init__(self, problems: Iterable[Problem], source: str | None = None):
        self.problems = list(problems)
        self.source = source
        count = len(self.problems)
        head = f"{source or 'manifest'}: {count} problem{'s' if count != 1 else ''}"
        super().__init__("\n".join([head] + ["  " + p.render(source) for p in self.problems]))


def closest(word: str, choices: Iterable[str]) -> str | None:
    """The most similar choice to ``word``, or None when nothing is close."""
    choices = list(choices)
    matches = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    if matches:
        return matches[0]
    # swapped letters ("tyni" for "tiny") score low with difflib but are the commonest typo
    for choice in choices:
        if len(choice) == len(word) and sorted(choice) == sorted(word):
            return choice
    return None


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    match = closest(word, choices)
    return f"did you mean '{match}'?" if match else None
