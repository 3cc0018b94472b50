"""The plugin's actual work (imported only when a component or command runs)."""

from pathlib import Path


def greeting(name: str) -> str:
    return f"Hello, {name}!"


def read_lines(path: str) -> list[str]:
    return [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
