import pytest
from pydantic import BaseModel, ConfigDict

from sigerlm.errors import ComponentError
from sigerlm.registry import Components, make_register


class Opts(BaseModel):
    model_config = ConfigDict(extra="forbid")
    size: int = 3


def factory(run, options):
    """Makes a thing."""
    return ("built", run, options)


def register_into(components, kind, plugin, *names, options=Opts):
    staged = []
    register = make_register(kind, plugin, staged)
    for name in names:
        register(name, factory, options=options)
    for component in staged:
        components[kind].add(component)
    return staged


def test_registered_component_remembers_its_plugin_and_builds_with_validated_options():
    components = Components()
    register_into(components, "steps", "alpha", "count")
    component = components["steps"].get("count")
    assert component.plugin == "alpha"
    assert component.qualified_name == "alpha:count"
    assert component.description == "Makes a thing."
    assert component.build("RUN", options={"size": 5}) == ("built", "RUN", Opts(size=5))  # the options object
    assert component.build("RUN") == ("built", "RUN", Opts(size=3))
    assert components.by_plugin("alpha") == {"steps": ["count"]}


def test_same_name_from_two_plugins_needs_plugin_prefix_and_error_names_both():
    components = Components()
    register_into(components, "datasets", "alpha", "lines")
    register_into(components, "datasets", "beta", "lines")
    with pytest.raises(ComponentError) as info:
        components["datasets"].get("lines")
    message = str(info.value)
    assert "'alpha'" in message and "'beta'" in message and "alpha:lines" in message
    assert components["datasets"].get("beta:lines").plugin == "beta"
    assert components["datasets"].get("alpha:lines").plugin == "alpha"


def test_same_name_twice_from_one_plugin_fails():
    components = Components()
    register_into(components, "steps", "alpha", "count")
    with pytest.raises(ComponentError, match="registers step 'count' twice"):
        register_into(components, "steps", "alpha", "count")


def test_unknown_name_suggests_the_closest():
    components = Components()
    register_into(components, "steps", "alpha", "train", "evaluate")
    with pytest.raises(ComponentError, match="unknown step 'trian'; did you mean 'train'"):
        components["steps"].get("trian")
    with pytest.raises(ComponentError, match="plugin 'beta' has no step 'train'; it is provided by 'alpha:train'"):
        components["steps"].get("beta:train")
    with pytest.raises(ComponentError, match="no loaded plugin provides any blocks"):
        components["blocks"].get("ssm")


@pytest.mark.parametrize("name", ["Bad", "has:colon", "", "-lead", "white space"])
def test_invalid_names_are_refused(name):
    with pytest.raises(ComponentError, match="names are lower-case"):
        register_into(Components(), "steps", "alpha", name)


def test_options_must_be_a_strict_pydantic_model():
    class Loose(BaseModel):
        size: int = 1

    with pytest.raises(ComponentError, match="extra='forbid'"):
        register_into(Components(), "steps", "alpha", "x", options=Loose)
    with pytest.raises(ComponentError, match="pydantic BaseModel subclass"):
        register_into(Components(), "steps", "alpha", "x", options=dict)


def test_unknown_kind_is_an_error():
    with pytest.raises(ComponentError, match="unknown component kind 'widgets'"):
        Components()["widgets"]
