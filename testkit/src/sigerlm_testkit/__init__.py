"""The test kit: pytest fixtures and dummy components for SigerLM and its plugins.

Use it from a plugin's ``conftest.py``::

    pytest_plugins = ["sigerlm_testkit"]

Fixtures:

- ``plugin_manager``: a fresh manager with core's built-in plugin and the test kit's dummy
  components (plugin ``testkit``: block ``identity``, adapter ``random-embedding``, dataset
  ``random-tokens``, step ``record-calls``); add the plugins a test needs with ``add_plugin``;
- ``tiny_config``: ``SigerConfig.from_profile("tiny")``;
- ``run_manifest``: runs a manifest (a dict or a file) with ``plugin_manager`` in a temporary
  folder and returns the ``RunResult``.

The session pins torch to one thread (the test machines have two shared cores).
This module imports pytest only when pytest is installed, and never imports torch itself.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from types import ModuleType
from typing import Any

from sigerlm.plugins import PluginRecord, SigerPluginManager, make_plugin_manager


def add_plugin(pm: SigerPluginManager, plugin: ModuleType | str | Any, name: str | None = None) -> str:
    """Register a hooks module (or its import path) on ``pm`` as a plugin; raise if it fails."""
    module = importlib.import_module(plugin) if isinstance(plugin, str) else plugin
    name = name or getattr(module, "__name__", type(module).__name__).split(".")[0]
    record = PluginRecord(name, getattr(module, "__name__", repr(module)))
    if not pm.load_module(module, name, record):
        raise AssertionError(f"plugin {name} failed to register: {record.error}")
    bad = pm.unspecified_hookimpls().get(name)
    if bad:
        raise AssertionError(f"plugin {name} implements unknown hooks: {bad}")
    pm.components  # noqa: B018 - surface registration errors now
    if record.error:
        raise AssertionError(f"plugin {name} failed: {record.error}")
    return name


def kit_plugin_manager(load: Any = "none") -> SigerPluginManager:
    """``make_plugin_manager(load)`` plus the test kit's dummy components (plugin ``testkit``)."""
    from sigerlm_testkit import components

    pm = make_plugin_manager(load=load)
    add_plugin(pm, components, "testkit")
    return pm


def run_manifest_with(
    pm: SigerPluginManager,
    manifest: dict[str, Any] | str | Path,
    out_dir: str | Path,
    overrides: tuple[str, ...] | list[str] = (),
    **kwargs: Any,
):
    from sigerlm.manifest import load_manifest
    from sigerlm.run import execute

    resolved, pm = load_manifest(manifest, [*overrides, f"out_dir={out_dir}"], pm=pm, force=kwargs.get("force", False))
    return execute(resolved, pm, **kwargs)


try:
    import pytest
except ImportError:  # the kit's components work without pytest
    pytest = None  # type: ignore[assignment]

if pytest is not None:

    def pytest_configure(config: Any) -> None:
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        try:
            import torch
        except ImportError:
            return
        torch.set_num_threads(1)

    @pytest.fixture
    def plugin_manager() -> SigerPluginManager:
        """A fresh plugin manager holding core's built-in plugin and the test kit's ``testkit``."""
        return kit_plugin_manager()

    @pytest.fixture
    def tiny_config():
        from sigerlm.model.config import SigerConfig

        return SigerConfig.from_profile("tiny")

    @pytest.fixture
    def run_manifest(plugin_manager: SigerPluginManager, tmp_path: Path):
        """``run_manifest(manifest, overrides=(), out_dir=None, resume=False, force=False)``."""

        def run(manifest, overrides=(), out_dir=None, **kwargs):
            return run_manifest_with(plugin_manager, manifest, out_dir or tmp_path / "run", overrides, **kwargs)

        return run


def check_entry_point(name: str, distribution: str) -> SigerPluginManager:
    """Assert that ``distribution`` is installed with entry point ``name`` in the ``sigerlm``
    group, that its hooks module loads, and that every hook it implements matches a spec.
    Returns a manager with core and that plugin loaded."""
    from importlib import metadata

    from sigerlm.plugins import ENTRY_POINT_GROUP

    eps = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
    assert eps, f"no '{name}' entry point in group '{ENTRY_POINT_GROUP}': is {distribution} installed?"
    ep = eps[0]
    assert ep.dist is not None and ep.dist.name == distribution, (
        f"entry point '{name}' belongs to {ep.dist.name if ep.dist else None}, not {distribution}"
    )
    pm = make_plugin_manager(load=[name], required=[name], strict=True)
    record = pm.records[name]
    assert record.loaded, record.error
    assert record.distribution == distribution
    return pm


def write_distribution(
    site: str | Path,
    distribution: str,
    modules: dict[str, str],
    entry_points: dict[str, str],
    version: str = "0.1.0",
) -> Path:
    """Lay out an installed distribution in ``site`` (a folder to put on ``sys.path`` or
    ``PYTHONPATH``): its modules and a ``.dist-info`` with ``sigerlm`` entry points. This is
    how a test installs a plugin (a broken one, say) without pip.

    ``modules`` maps dotted module names to source; ``entry_points`` maps entry-point names to
    module paths.
    """
    site = Path(site)
    for dotted, source in modules.items():
        parts = dotted.split(".")
        folder = site.joinpath(*parts[:-1])
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(1, len(parts)):
            init = site.joinpath(*parts[:i], "__init__.py")
            if not init.exists():
                init.write_text("")
        (folder / f"{parts[-1]}.py").write_text(source)
    info = site / f"{distribution.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {distribution}\nVersion: {version}\n")
    lines = ["[sigerlm]"] + [f"{name} = {target}" for name, target in entry_points.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")
    return site


def install_testkit(site: str | Path) -> Path:
    """Lay out the test kit as an installed plugin ``testkit`` in ``site`` (for a ``siger``
    subprocess: put ``site`` on its ``PYTHONPATH``). Nothing registers it otherwise."""
    return write_distribution(site, "sigerlm-testkit", {}, {"testkit": "sigerlm_testkit.components"})


def assert_imports_without_torch(module: str) -> None:
    """Import ``module`` in a fresh interpreter and fail if that imported torch (hooks modules
    are imported by every ``siger`` call and must stay light)."""
    import subprocess
    import sys

    code = f"import sys, {module}; assert 'torch' not in sys.modules, 'torch imported by {module}'"
    subprocess.run([sys.executable, "-c", code], check=True)


def saved_tensor_bytes(fn: Any) -> int:
    """Bytes autograd keeps for the backward while ``fn()`` runs: every saved tensor's storage,
    counted once however many tensors view it (what a kernel's "keeps less" claim is about)."""
    import torch

    storages: dict[int, int] = {}

    def pack(t: Any) -> Any:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return sum(storages.values())


def scan_inputs(b: int, l: int, d: int, n: int, dtype: Any = None, state: bool = True, seed: int = 0) -> list[Any]:
    """Leaves ``u, dt, A, B, C, D, state`` of a selective scan (``sigerlm.model.scan``; state
    None without ``state``), realistic in range and requiring gradients: for scan back-end tests."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def rnd(*shape: int) -> Any:
        return torch.randn(*shape, generator=g, dtype=dtype or torch.float32)

    u = rnd(b, l, d)
    dt = torch.nn.functional.softplus(rnd(b, l, d) - 1.0)
    A = -torch.exp(rnd(d, n) * 0.5)
    B, C, D = rnd(b, l, n), rnd(b, l, n), rnd(d)
    h = rnd(b, d, n) if state else None
    return [t.requires_grad_() if t is not None else None for t in (u, dt, A, B, C, D, h)]


def scan_results(scan: Any, args: list[Any], weights: tuple[Any, Any]) -> list[Any]:
    """``scan(*args) -> (y, last)``, then the gradients of ``sum(y * weights[0]) + sum(last *
    weights[1])`` (every output and the last state, weighted differently): ``[y, last, du, ...]``."""
    for t in args:
        if t is not None:
            t.grad = None
    y, last = scan(*args)
    ((y * weights[0]).sum() + (last * weights[1]).sum()).backward()
    return [y.detach(), last.detach()] + [t.grad.clone() for t in args if t is not None]


def manifest_test_overrides(path: str | Path) -> list[str]:
    """The ``--set`` overrides a manifest asks tests to use, from a comment line
    ``# test-overrides: key=value ...`` (to shrink a long main job to seconds)."""
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        if line.startswith("# test-overrides:"):
            return line.split(":", 1)[1].split()
    return []
