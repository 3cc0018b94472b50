"""Typed component registries: what each plugin registered, under which name, with which options.

A component is a named factory of one *kind* (block, adapter, tokenizer, ...) plus the pydantic
model that validates its options. Plugins add components through the ``register`` callback
their ``register_<kinds>`` hook receives; the host records which plugin registered each one.

Looking a component up:
- ``"name"`` finds it when exactly one plugin registered that name;
- ``"plugin:name"`` picks one plugin's component when several registered the name.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from sigerlm.errors import ComponentError, closest

#: Component kinds, in the order ``siger plugins`` shows them. Each has a ``register_<kind>`` hook.
KINDS: tuple[str, ...] = (
    "blocks",
    "adapters",
    "tokenizers",
    "transforms",
    "datasets",
    "evaluators",
    "exporters",
    "runtimes",
    "steps",
)

SINGULAR = {kind: kind[:-1] for kind in KINDS}

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


class NoOptions(BaseModel):
    """Options model of a component that takes none."""

    model_config = ConfigDict(extra="forbid")


class Register(Protocol):
    """The callback a ``register_<kinds>`` hook receives."""

    def __call__(
        self,
        name: str,
        factory: Callable[..., Any],
        options: type[BaseModel] | None = None,
        description: str | None = None,
    ) -> None: ...


@dataclass(frozen=True)
class Component:
    kind: str
    name: str
    plugin: str
    factory: Callable[..., Any]
    options: type[BaseModel]
    description: str = ""

    @property
    def qualified_name(self) -> str:
        return f"{self.plugin}:{self.name}"

    def validate(self, options: Mapping[str, Any] | BaseModel | None = None) -> BaseModel:
        """Validate options (raises ``pydantic.ValidationError``)."""
        if isinstance(options, self.options):
            return options
        return self.options.model_validate(dict(options or {}))

    def build(self, *context: Any, options: Mapping[str, Any] | BaseModel | None = None) -> Any:
        """Call the factory with its kind's context and the validated options object:
        ``factory(*context, options)``."""
        return self.factory(*context, self.validate(options))


@dataclass
class Registry:
    """The components of one kind."""

    kind: str
    _by_name: dict[str, list[Component]] = field(default_factory=dict)

    def add(self, component: Component) -> None:
        for existing in self._by_name.get(component.name, []):
            if existing.plugin == component.plugin:
                raise ComponentError(
                    f"plugin '{component.plugin}' registers {SINGULAR[self.kind]} '{component.name}' twice"
                )
        self._by_name.setdefault(component.name, []).append(component)

    def __iter__(self) -> Iterator[Component]:
        for components in self._by_name.values():
            yield from components

    def __len__(self) -> int:
        return sum(len(c) for c in self._by_name.values())

    def __contains__(self, ref: object) -> bool:
        try:
            self.get(str(ref))
        except ComponentError:
            return False
        return True

    def names(self) -> list[str]:
        """Every name a manifest may use: bare names and ``plugin:name``."""
        out = sorted(self._by_name)
        out += sorted(c.qualified_name for c in self)
        return out

    def get(self, ref: str) -> Component:
        """Find a component by ``name`` or ``plugin:name``; the error names the fix."""
        what = SINGULAR[self.kind]
        plugin, _, name = ref.rpartition(":")
        candidates = self._by_name.get(name, [])
        if plugin:
            for component in candidates:
                if component.plugin == plugin:
                    return component
            if candidates:
                owners = ", ".join(f"'{c.qualified_name}'" for c in candidates)
                raise ComponentError(f"plugin '{plugin}' has no {what} '{name}'; it is provided by {owners}")
        elif len(candidates) == 1:
            return candidates[0]
        elif len(candidates) > 1:
            owners = " and ".join(f"'{c.plugin}'" for c in candidates)
            choices = ", ".join(f"'{c.qualified_name}'" for c in candidates)
            raise ComponentError(f"{what} '{name}' is registered by plugins {owners}; choose one with {choices}")
        message = f"unknown {what} '{ref}'"
        suggestion = closest(ref, self.names())
        if suggestion:
            message += f"; did you mean '{suggestion}'?"
        elif self._by_name:
            message += f"; available: {', '.join(sorted(self._by_name))}"
        else:
            message += f"; no loaded plugin provides any {self.kind}"
        raise ComponentError(message)


class Components:
    """Every registry, by kind: ``components["steps"].get("train")``."""

    def __init__(self) -> None:
        self._kinds = {kind: Registry(kind) for kind in KINDS}

    def __getitem__(self, kind: str) -> Registry:
        try:
            return self._kinds[kind]
        except KeyError:
            raise ComponentError(f"unknown component kind '{kind}'; kinds: {', '.join(KINDS)}") from None

    def __iter__(self) -> Iterator[Registry]:
        return iter(self._kinds.values())

    def by_plugin(self, plugin: str) -> dict[str, list[str]]:
        """``{kind: [names]}`` of what one plugin registered (kinds with none are left out)."""
        out: dict[str, list[str]] = {}
        for registry in self:
            names = sorted(c.name for c in registry if c.plugin == plugin)
            if names:
                out[registry.kind] = names
        return out


def make_register(kind: str, plugin: str, into: list[Component]) -> Register:
    """The ``register`` callback handed to one plugin's ``register_<kind>`` hook."""

    def register(
        name: str,
        factory: Callable[..., Any],
        options: type[BaseModel] | None = None,
        description: str | None = None,
    ) -> None:
        what = SINGULAR[kind]
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ComponentError(
                f"plugin '{plugin}' registers {what} {name!r}: names are lower-case letters, digits, "
                "'-', '_' and '.', starting with a letter or digit (no ':', which separates the plugin)"
            )
        if not callable(factory):
            raise ComponentError(f"plugin '{plugin}' registers {what} '{name}' with a factory that is not callable")
        if options is None:
            options = NoOptions
        if not (isinstance(options, type) and issubclass(options, BaseModel)):
            raise ComponentError(
                f"plugin '{plugin}' registers {what} '{name}' with options={options!r}: "
                "pass a pydantic BaseModel subclass"
            )
        if options.model_config.get("extra") != "forbid":
            raise ComponentError(
                f"plugin '{plugin}' registers {what} '{name}': its options model {options.__name__} "
                "must set extra='forbid' so that typos in manifests are reported"
            )
        doc = description if description is not None else (factory.__doc__ or "")
        into.append(Component(kind, name, plugin, factory, options, doc.strip().split("\n")[0]))

    return register
