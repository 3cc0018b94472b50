"""Finding, loading and isolating plugins.

``make_plugin_manager(load=...)`` returns a fresh manager each call (there is no module-global
state). Entry points in the group ``sigerlm`` are filtered *before* they are imported:

- ``load="all"`` takes every installed plugin, narrowed by ``SIGER_LOAD_PLUGINS`` (comma list);
- ``load="none"`` takes only core's built-in plugin (what tests start from);
- ``load=["text", "lora"]`` takes exactly those (a manifest's ``plugins:``); a name that is not
  installed is an error;
- ``SIGER_BLOCK_PLUGINS`` (comma list) removes plugins in every case.

Each plugin loads in isolation: a plugin that fails to import, registers badly, or implements a
hook that no specification declares (a misspelling) is recorded with its error and left out. The
failure is fatal only for plugins listed in ``required`` or when ``SIGER_STRICT_PLUGINS=1``.
``SIGER_TRACE_PLUGINS=1`` writes every hook call to stderr.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from types import ModuleType
from typing import Any

import pluggy

from sigerlm import hookspecs
from sigerlm.errors import PluginLoadError, closest
from sigerlm.registry import KINDS, Component, Components, make_register

ENTRY_POINT_GROUP = "sigerlm"
BUILTIN = "core"
TRUE = {"1", "true", "yes", "on"}


@dataclass
class PluginRecord:
    """What ``siger plugins`` shows about one plugin."""

    name: str
    module: str
    distribution: str | None = None
    version: str | None = None
    builtin: bool = False
    error: str | None = None
    components: dict[str, list[str]] = field(default_factory=dict)

    @property
    def loaded(self) -> bool:
        return self.error is None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["loaded"] = self.loaded
        return data


def env_list(name: str) -> list[str] | None:
    """A comma-separated environment variable as a list; None when unset."""
    value = os.environ.get(name)
    if value is None:
        return None
    return [item.strip() for item in value.split(",") if item.strip()]


def installed_entry_points() -> dict[str, metadata.EntryPoint]:
    """Installed ``sigerlm`` entry points by name (nothing is imported)."""
    found: dict[str, metadata.EntryPoint] = {}
    for ep in metadata.entry_points(group=ENTRY_POINT_GROUP):
        found.setdefault(ep.name, ep)
    return found


def _short_error(exc: BaseException) -> str:
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{where}"


class SigerPluginManager(pluggy.PluginManager):
    """A pluggy manager that remembers how each plugin loaded and what it registered."""

    def __init__(self) -> None:
        super().__init__(hookspecs.PROJECT)
        self.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self._components: Components | None = None

    # -- loading ---------------------------------------------------------------------------------
    def load_module(self, module: ModuleType | Any, name: str, record: PluginRecord) -> bool:
        """Register a hooks module (or object); record the error instead of raising."""
        self.records[name] = record
        try:
            self.register(module, name=name)
        except Exception as exc:  # a bad hookimpl signature, a duplicate name, ...
            record.error = _short_error(exc)
            return False
        self._components = None
        return True

    def drop(self, name: str, error: str) -> None:
        """Unregister a plugin and record why."""
        plugin = self.get_plugin(name)
        if plugin is not None:
            self.unregister(plugin)
        self.records[name].error = error
        self._components = None

    def unspecified_hookimpls(self) -> dict[str, list[str]]:
        """``{plugin: [hook names]}`` of implementations that match no specification."""
        bad: dict[str, list[str]] = {}
        for hook_name, caller in vars(self.hook).items():
            if not isinstance(caller, pluggy.HookCaller) or caller.has_spec():
                continue
            for impl in caller.get_hookimpls():
                if not impl.optionalhook:
                    bad.setdefault(impl.plugin_name, []).append(hook_name)
        return bad

    # -- components ------------------------------------------------------------------------------
    @property
    def components(self) -> Components:
        """Every component the loaded plugins registered (collected once, on first use)."""
        if self._components is None:
            self._components = self._collect()
        return self._components

    def _collect(self) -> Components:
        components = Components()
        for record in self.records.values():
            record.components = {}
        for kind in KINDS:
            hook_name = f"register_{kind}"
            for impl in getattr(self.hook, hook_name).get_hookimpls():
                name = impl.plugin_name
                record = self.records.get(name)
                if record is None or record.error:
                    continue
                others = [p for n, p in self.list_name_plugin() if n != name]
                staged: list[Component] = []
                try:
                    self.subset_hook_caller(hook_name, remove_plugins=others)(
                        register=make_register(kind, name, staged)
                    )
                    for component in staged:
                        components[kind].add(component)
                except Exception as exc:
                    if strict_plugins():
                        raise PluginLoadError(f"plugin '{name}' failed in {hook_name}: {exc}") from exc
                    record.error = f"in {hook_name}: {_short_error(exc)}"
                    # forget whatever this plugin registered before it failed
                    return self._recollect_without(name)
        for record in self.records.values():
            if not record.error:
                record.components = components.by_plugin(record.name)
        return components

    def _recollect_without(self, name: str) -> Components:
        self.drop(name, self.records[name].error or "failed")
        return self._collect()

    def get_component(self, kind: str, ref: str) -> Component:
        return self.components[kind].get(ref)

    def plugin_records(self) -> list[PluginRecord]:
        """Every plugin seen, loaded or not, built-in first."""
        self.components  # noqa: B018 - fills in each record's components
        return sorted(self.records.values(), key=lambda r: (not r.builtin, r.name))


def strict_plugins() -> bool:
    return os.environ.get("SIGER_STRICT_PLUGINS", "").strip().lower() in TRUE


def make_plugin_manager(
    load: str | Iterable[str] = "all",
    *,
    required: Iterable[str] = (),
    builtins: bool = True,
    strict: bool | None = None,
) -> SigerPluginManager:
    """Build a fresh plugin manager.

    ``load`` chooses the entry points to import ("all", "none" or a list of names);
    ``required`` names plugins whose failure to load is fatal (a manifest's ``plugins:``);
    ``strict`` (default: ``SIGER_STRICT_PLUGINS``) makes every failure fatal.
    """
    strict = strict_plugins() if strict is None else strict
    required = list(required)
    pm = SigerPluginManager()
    if os.environ.get("SIGER_TRACE_PLUGINS", "").strip().lower() in TRUE:
        pm.trace.root.setwriter(sys.stderr.write)
        pm.enable_tracing()
    pm.hook.add_hooks.call_historic(kwargs={"plugin_manager": pm})

    if builtins:
        from sigerlm import builtins as builtin_hooks

        pm.load_module(
            builtin_hooks,
            BUILTIN,
            PluginRecord(BUILTIN, builtin_hooks.__name__, "sigerlm", _version("sigerlm"), builtin=True),
        )

    available = installed_entry_points()
    blocked = set(env_list("SIGER_BLOCK_PLUGINS") or [])
    if isinstance(load, str):
        if load == "none":
            wanted: list[str] = []
        elif load == "all":
            only = env_list("SIGER_LOAD_PLUGINS")
            wanted = sorted(available) if only is None else only
        else:
            raise ValueError(f"load must be 'all', 'none' or a list of plugin names, not {load!r}")
    else:
        wanted = list(dict.fromkeys(load))

    problems: list[str] = []
    for name in wanted:
        if name == BUILTIN:
            continue
        if name in blocked:
            if name in required:
                problems.append(f"plugin '{name}' is needed but SIGER_BLOCK_PLUGINS blocks it")
            continue
        ep = available.get(name)
        if ep is None:
            if name in required or not isinstance(load, str):
                hint = closest(name, available)
                problems.append(
                    f"plugin '{name}' is not installed; "
                    + (f"did you mean '{hint}'?" if hint else f"install it with `pip install sigerlm-{name}`")
                )
            continue
        dist = ep.dist
        record = PluginRecord(name, ep.value, dist.name if dist else None, dist.version if dist else None)
        try:
            module = ep.load()
        except Exception as exc:
            pm.records[name] = record
            record.error = _short_error(exc)
            continue
        pm.load_module(module, name, record)

    for plugin, hooks in pm.unspecified_hookimpls().items():
        names = ", ".join(f"'{h}'" for h in hooks)
        hints = [closest(h, _spec_names(pm)) for h in hooks]
        hint = "; ".join(f"did you mean '{h}'?" for h in hints if h)
        pm.drop(
            plugin,
            f"hook implementation {names} matches no hook specification"
            + (f" ({hint})" if hint else "")
            + "; mark hooks of other plugins @hookimpl(optionalhook=True)",
        )
    pm.check_pending()  # nothing unspecified is left: this only guards the loop above

    pm.components  # noqa: B018 - collect now, so registration errors show up in the records
    for record in pm.records.values():
        if record.error and (strict or record.name in required):
            problems.append(f"plugin '{record.name}' failed to load: {record.error}")
    if problems:
        raise PluginLoadError("\n".join(problems))
    return pm


def _spec_names(pm: SigerPluginManager) -> list[str]:
    return [
        name for name, caller in vars(pm.hook).items() if isinstance(caller, pluggy.HookCaller) and caller.has_spec()
    ]


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None
