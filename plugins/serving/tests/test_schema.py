"""Schemathesis against the OpenAPI schema: whatever the schema allows (and some of what it
does not), the server answers without a 5xx."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def api_app(model_dir, tmp_path_factory):
    from sigerlm.plugins import make_plugin_manager
    from sigerlm_serving.app import create_app
    from sigerlm_serving.settings import ServeSettings

    db = tmp_path_factory.mktemp("schema") / "s.db"
    # small limits keep generated requests cheap: long prompts and replies get 422, quickly
    return create_app(ServeSettings(model_dir=str(model_dir), db=str(db), max_new_tokens=16, max_prompt_tokens=256,
                                    max_streams_per_key=64), make_plugin_manager(load="none"))


@pytest.fixture(scope="module")
def api_schema(api_app):
    return schemathesis.openapi.from_asgi("/openapi.json", api_app)


def test_no_server_errors(api_schema):
    """Every operation, examples drawn from the schema (schemathesis' Hypothesis strategies).

    (schemathesis' own pytest plugin does not run under pytest 9, so the strategies are driven
    here with ``given``.)"""
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable

    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20
    failures = []
    cases = [(op, mode) for op in operations for mode in schemathesis.GenerationMode]
    for operation, mode in cases:  # valid requests, and requests the schema forbids
        @given(case=operation.as_strategy(mode))
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def check(case):
            response = case.call()
            case.validate_response(response, checks=[not_a_server_error])
            if response.status_code >= 400:
                error = response.json()["error"]  # every error is JSON with a code and a message
                assert error["code"] and error["message"]

        try:
            check()
        except Unsatisfiable:
            assert mode is schemathesis.GenerationMode.NEGATIVE  # nothing invalid to send (no body, free path)
        except Exception as exc:  # collect every operation's failure, then report them all
            failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
