"""Loading plugins from entry points: filtering, isolation, misspellings, extra hookspecs."""

import textwrap

import pytest

from sigerlm.errors import PluginLoadError
from sigerlm.plugins import make_plugin_manager
from sigerlm_testkit import add_plugin, write_distribution

GOOD = textwrap.dedent(
    """
    from pydantic import BaseModel, ConfigDict
    from sigerlm import hookimpl

    class Opts(BaseModel):
        model_config = ConfigDict(extra="forbid")
        word: str = "hi"

    def say(run, options):
        return {"said": options.word}

    @hookimpl
    def register_steps(register):
        register("say", say, options=Opts)
    """
)
BROKEN = "raise RuntimeError('boom at import')\n"
MISSPELLED = textwrap.dedent(
    """
    from sigerlm import hookimpl

    @hookimpl
    def register_blokcs(register):
        pass
    """
)


@pytest.fixture
def site(tmp_path, monkeypatch):
    """A folder on sys.path where tests lay out installed plugin distributions."""
    folder = tmp_path / "site"
    folder.mkdir()
    monkeypatch.syspath_prepend(str(folder))
    for var in ("SIGER_LOAD_PLUGINS", "SIGER_BLOCK_PLUGINS", "SIGER_STRICT_PLUGINS", "SIGER_TRACE_PLUGINS"):
        monkeypatch.delenv(var, raising=False)
    return folder


def install(site, name, source):
    write_distribution(site, f"fake-{name}", {f"fake_{name}.hooks": source}, {name: f"fake_{name}.hooks"})


def test_load_none_has_only_the_builtin_plugin_and_managers_share_nothing():
    a = make_plugin_manager(load="none")
    b = make_plugin_manager(load="none")
    assert [r.name for r in a.plugin_records()] == ["core"]
    assert a.components is not b.components
    assert "train" in a.components["steps"]
    assert "record-calls" not in a.components["steps"]  # the test kit's dummies are not core's


def test_entry_point_plugin_is_discovered_with_distribution_and_version(site):
    install(site, "good", GOOD)
    pm = make_plugin_manager(load=["good"])
    record = pm.records["good"]
    assert record.loaded and record.distribution == "fake-good" and record.version == "0.1.0"
    assert record.components == {"steps": ["say"]}
    assert pm.get_component("steps", "good:say").plugin == "good"


def test_plugin_failing_on_import_is_recorded_and_others_still_load(site):
    install(site, "good", GOOD)
    install(site, "broken", BROKEN)
    pm = make_plugin_manager()
    assert pm.records["good"].loaded
    assert not pm.records["broken"].loaded
    assert "RuntimeError: boom at import" in pm.records["broken"].error
    assert "say" in pm.components["steps"]


def test_broken_plugin_is_fatal_when_required_or_strict(site, monkeypatch):
    install(site, "broken", BROKEN)
    with pytest.raises(PluginLoadError, match="plugin 'broken' failed to load: RuntimeError: boom"):
        make_plugin_manager(load=["broken"], required=["broken"])
    monkeypatch.setenv("SIGER_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError, match="boom at import"):
        make_plugin_manager()


def test_filters_apply_before_import(site, monkeypatch):
    install(site, "good", GOOD)
    install(site, "broken", BROKEN)
    monkeypatch.setenv("SIGER_BLOCK_PLUGINS", "broken")
    pm = make_plugin_manager()
    assert "broken" not in pm.records  # never imported, so no error either
    monkeypatch.delenv("SIGER_BLOCK_PLUGINS")
    monkeypatch.setenv("SIGER_LOAD_PLUGINS", "good")
    pm = make_plugin_manager()
    assert set(pm.records) == {"core", "good"}
    monkeypatch.setenv("SIGER_LOAD_PLUGINS", "")
    assert set(make_plugin_manager().records) == {"core"}


def test_blocked_plugin_that_is_required_is_an_error(site, monkeypatch):
    install(site, "good", GOOD)
    monkeypatch.setenv("SIGER_BLOCK_PLUGINS", "good")
    with pytest.raises(PluginLoadError, match="needed but SIGER_BLOCK_PLUGINS blocks it"):
        make_plugin_manager(load=["good"], required=["good"])


def test_missing_plugin_names_the_install_command(site):
    install(site, "good", GOOD)
    with pytest.raises(PluginLoadError, match=r"plugin 'godo' is not installed; did you mean 'good'\?$"):
        make_plugin_manager(load=["godo"], required=["godo"])
    with pytest.raises(
        PluginLoadError, match=r"plugin 'vision' is not installed; install it with `pip install sigerlm-vision`"
    ):
        make_plugin_manager(load=["vision"], required=["vision"])


def test_misspelled_hook_implementation_fails_loudly(site, monkeypatch):
    install(site, "typo", MISSPELLED)
    pm = make_plugin_manager()
    error = pm.records["typo"].error
    assert "'register_blokcs' matches no hook specification" in error
    assert "did you mean 'register_blocks'?" in error
    assert pm.get_plugin("typo") is None
    monkeypatch.setenv("SIGER_STRICT_PLUGINS", "1")
    with pytest.raises(PluginLoadError, match="register_blokcs"):
        make_plugin_manager()


def test_bad_registration_drops_only_that_plugin(site):
    install(site, "good", GOOD)
    install(
        site,
        "badreg",
        "from sigerlm import hookimpl\n\n@hookimpl\ndef register_steps(register):\n"
        "    register('fine', print)\n    register('Not A Name', print)\n",
    )
    pm = make_plugin_manager()
    assert "names are lower-case" in pm.records["badreg"].error
    assert "fine" not in pm.components["steps"]  # nothing half-registered survives
    assert "say" in pm.components["steps"]


def test_plugin_can_add_hookspecs_that_others_implement(plugin_manager):
    from sigerlm import hookimpl, hookspec

    class Specs:
        @hookspec
        def register_widgets(self, register):
            """A hook of a plugin."""

    class Provider:
        @hookimpl
        def add_hooks(self, plugin_manager):
            plugin_manager.add_hookspecs(Specs)

    class User:
        @hookimpl(optionalhook=True)
        def register_widgets(self, register):
            register("knob")

    add_plugin(plugin_manager, User(), "user")  # before the provider: the spec arrives later
    add_plugin(plugin_manager, Provider(), "provider")
    seen = []
    plugin_manager.hook.register_widgets(register=seen.append)
    assert seen == ["knob"]


def test_optional_hook_without_its_provider_loads_quietly(site):
    install(
        site,
        "extra",
        "from sigerlm import hookimpl\n\n@hookimpl(optionalhook=True)\ndef register_routes(router, app_state):\n    pass\n",  # noqa: E501
    )
    pm = make_plugin_manager(load=["extra"], required=["extra"])
    assert pm.records["extra"].loaded


def test_trace_writes_hook_calls(site, monkeypatch, capfd):
    monkeypatch.setenv("SIGER_TRACE_PLUGINS", "1")
    install(site, "good", GOOD)
    make_plugin_manager(load=["good"]).components  # noqa: B018
    assert "register_steps" in capfd.readouterr().err
