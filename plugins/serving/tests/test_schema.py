"""Schemathesis against the OpenAPI schema: whatever the schema allows (and some of what it
does not), the server answers without a 5xx."""

import json
import time

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
    return create_app(
        ServeSettings(
            model_dir=str(model_dir), db=str(db), max_new_tokens=16, max_prompt_tokens=256, max_streams_per_key=64
        ),
        make_plugin_manager(load="none"),
    )


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
        @settings(
            max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
        )
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


OPENAI_PATHS = ("/v1/chat/completions", "/v1/completions", "/v1/models")
#: each fuzz test below stops drawing new requests after this many seconds
FUZZ_SECONDS = 60


def check_answer(response):
    """No 5xx; every error is JSON with a code; a stream ends with [DONE] and carries no server error."""
    assert response.status_code < 500, response.text[:500]
    if response.status_code >= 400:
        error = response.json()["error"]
        assert error["code"] and error["message"]
    elif "text/event-stream" in str(response.headers.get("content-type")):  # a list in schemathesis' answers
        assert response.text.endswith("data: [DONE]\n\n") and "server_error" not in response.text


@pytest.fixture
def fresh_app(model_dir, tmp_path):
    """An app of its own (schemathesis runs an app's lifespan, and its end stops the app)."""
    from sigerlm.plugins import make_plugin_manager
    from sigerlm_serving.app import create_app
    from sigerlm_serving.settings import ServeSettings

    settings = ServeSettings(
        model_dir=str(model_dir), db=str(tmp_path / "s.db"), max_new_tokens=16, max_prompt_tokens=256
    )
    return create_app(settings, make_plugin_manager(load="none"))


def test_openai_endpoints_with_arbitrary_unicode(fresh_app):
    """Schemathesis' strategies for the OpenAI-compatible operations, drawing strings from all
    of Unicode (every plane, control characters, NUL), valid and invalid requests."""
    from hypothesis import given
    from hypothesis.errors import Unsatisfiable

    schema = schemathesis.openapi.from_asgi("/openapi.json", fresh_app)
    schema.config.generation.codec = None  # any code point, not only what UTF-8 text usually holds
    operations = [r.ok() for r in schema.get_all_operations() if r.ok().path in OPENAI_PATHS]
    assert {op.path for op in operations} == set(OPENAI_PATHS)
    deadline, seen, failures = time.monotonic() + FUZZ_SECONDS, [], []
    for operation in operations:
        for mode in schemathesis.GenerationMode:

            @given(case=operation.as_strategy(mode))
            @settings(
                max_examples=40, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
            )
            def check(case):
                if time.monotonic() > deadline:
                    return
                seen.append(highest_code_point(case.body))
                check_answer(case.call())

            try:
                check()
            except Unsatisfiable:
                assert mode is schemathesis.GenerationMode.NEGATIVE  # GET /v1/models: nothing invalid to send
            except Exception as exc:  # every operation's failure, reported together
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}")
    assert not failures, "\n\n".join(failures)
    assert max(seen) > 0xFFFF  # strings reached beyond the Basic Multilingual Plane


def highest_code_point(value):
    if isinstance(value, str):
        return max(map(ord, value), default=0)
    if isinstance(value, dict):
        return max((max(highest_code_point(k), highest_code_point(v)) for k, v in value.items()), default=0)
    if isinstance(value, list):
        return max(map(highest_code_point, value), default=0)
    return 0


def json_bodies():
    """OpenAI-shaped bodies whose strings hold anything, lone surrogates included (sent as JSON
    escapes, as a client would): half of them valid in every other way (so the text reaches the
    tokenizer), half with wild values anywhere; one in four with a few bytes of the encoded body
    overwritten."""
    from hypothesis import strategies as st

    char = st.one_of(st.characters(codec=None), st.characters(categories=["Cs"]))
    text = st.text(alphabet=char, max_size=24)
    wild = st.one_of(text, st.integers(), st.floats(), st.booleans(), st.none(), st.lists(text, max_size=2))

    def shapes(valid: bool):
        value = (lambda good: good) if valid else (lambda good: st.one_of(good, wild))
        part = st.fixed_dictionaries({"type": value(st.just("text")), "text": value(text)})
        content = value(st.one_of(text, st.lists(part, min_size=1, max_size=3)))
        role = value(st.sampled_from(["system", "user", "assistant", "developer", "tool"]))
        message = st.fixed_dictionaries({"role": role, "content": content})
        common = {
            "max_tokens": value(st.integers(1, 4)),
            "stream": value(st.booleans()),
            "stop": value(st.lists(text.filter(bool), max_size=2)),
            "temperature": value(st.floats(0, 2)),
            "seed": value(st.integers(0, 2**63 - 1)),
            "stream_options": value(st.fixed_dictionaries({"include_usage": st.booleans()})),
        }
        model = value(st.just("SIGER"))
        chat = st.fixed_dictionaries(
            {"model": model, "messages": value(st.lists(message, min_size=1, max_size=3))}, optional=common
        )
        completion = st.fixed_dictionaries(
            {"model": model, "prompt": value(st.one_of(text, st.lists(text, min_size=1, max_size=1)))},
            optional=common,
        )
        return st.one_of(
            st.tuples(st.just("/v1/chat/completions"), chat), st.tuples(st.just("/v1/completions"), completion)
        )

    damage = st.integers(0, 3).flatmap(
        lambda k: st.tuples(st.integers(0, 10_000), st.binary(min_size=1, max_size=3)) if k == 0 else st.none()
    )
    return st.tuples(st.one_of(shapes(True), shapes(False)), damage)


def test_openai_endpoints_with_lone_surrogates_and_broken_bytes(fresh_app):
    from fastapi.testclient import TestClient
    from hypothesis import given

    deadline = time.monotonic() + FUZZ_SECONDS
    with TestClient(fresh_app, raise_server_exceptions=False) as client:

        @given(drawn=json_bodies())
        @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(drawn):
            if time.monotonic() > deadline:
                return
            (path, body), damage = drawn
            raw = json.dumps(body).encode()  # ensure_ascii: a lone surrogate travels as \ud800
            if damage is not None:
                at = damage[0] % len(raw)
                raw = raw[:at] + damage[1] + raw[at + len(damage[1]) :]
            check_answer(client.post(path, content=raw, headers={"content-type": "application/json"}))

        check()
