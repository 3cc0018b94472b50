import pytest

pytest_plugins = ["sigerlm_testkit"]


@pytest.fixture
def kernel_calls(monkeypatch):
    """The names of the compiled kernels called while a test runs (``kernels.load()`` spied)."""
    from sigerlm_kernels import kernels

    real, calls = kernels.load(), []

    class Spy:
        def __getattr__(self, name):
            calls.append(name)
            return getattr(real, name)

    monkeypatch.setattr(kernels, "load", Spy)
    return calls
