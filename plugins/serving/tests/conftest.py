import pytest

pytest_plugins = ["sigerlm_testkit"]

TEXTS = [
    "Nyak haga mengan di pekon.",
    "Saya mau makan di kampung.",
    "I want to eat in the village. é ü 👋",
    "Tabik pun, api kabar?",
    "Halo, apa kabar? Baik, terima kasih.",
] * 30


def build_tiny_model(folder, d_model=16, n_layers=2, vocab=300, seed=0, endless=False):
    """A random SigerLM with a small trained BPE, saved as a model folder. ``endless``: the
    embeddings of the end tokens and of tokens that are not whole characters are zero, so greedy
    decoding runs to ``max_new_tokens`` and every token shows as text."""
    import torch

    from sigerlm.model.config import SigerConfig
    from sigerlm_text.model import text_model
    from sigerlm_text.tokenizers.bpe import BPETokenizer

    tok = BPETokenizer.train(TEXTS, vocab_size=vocab, min_frequency=1)
    torch.manual_seed(seed)
    config = SigerConfig.from_profile("tiny", d_model=d_model, n_layers=n_layers)
    model = text_model(config, vocab_size=vocab, tokenizer=tok).eval()
    if endless:
        with torch.no_grad():
            for name in ("<|eos|>", "<|end_turn|>", "<|endoftext|>"):
                model.adapter.embedding.weight[tok.token_id(name)] = 0
            for i in range(tok.vocab_size):
                if "\ufffd" in tok.decode([i]):
                    model.adapter.embedding.weight[i] = 0
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def make_client(model_dir, tmp_path):
    """``make_client(**settings) -> TestClient`` on a fresh database in ``tmp_path``."""
    from fastapi.testclient import TestClient

    from sigerlm.plugins import make_plugin_manager
    from sigerlm_serving.app import create_app
    from sigerlm_serving.settings import ServeSettings

    clients = []

    def make(db=None, **overrides):
        settings = ServeSettings(model_dir=str(model_dir), db=str(db or tmp_path / "serving.db"), **overrides)
        client = TestClient(create_app(settings, make_plugin_manager(load="none")))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client):
    return make_client()


def free_port():
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer:
    """``siger serve`` in a subprocess on 127.0.0.1 (only the text and serving plugins load)."""

    def __init__(self, model_dir, db, *args, log=None):
        import os
        import subprocess
        import sys

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "SIGER_LOAD_PLUGINS": "text,serving", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("SIGER_API_KEYS", None)
        self.log = open(log or os.devnull, "w")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "from sigerlm.cli import main; main()",
                "serve",
                str(model_dir),
                "--port",
                str(self.port),
                "--db",
                str(db),
                "--threads",
                "1",
                "--log-level",
                "warning",
                *map(str, args),
            ],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.wait_ready()

    def wait_ready(self, timeout=90):
        import time

        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited with {self.proc.returncode}")
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server did not start")

    def kill(self, sig=None):
        import signal

        self.proc.send_signal(sig or signal.SIGKILL)
        self.proc.wait(30)

    def stop(self):
        import signal

        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except Exception:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="session")
def endless_model_dir(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("model") / "endless", endless=True)


@pytest.fixture(scope="module")
def live_server(endless_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("live")
    server = LiveServer(
        endless_model_dir,
        folder / "serving.db",
        "--max-new-tokens",
        "50000",
        "--max-streams-per-key",
        "32",
        log=folder / "server.log",
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def start_server():
    """``start_server(model_dir, db, *args, log=None) -> LiveServer``; stopped at the end."""
    servers = []

    def start(*args, **kwargs):
        server = LiveServer(*args, **kwargs)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


class ThreadServer:
    """An app served by uvicorn in a thread of this process (for apps built with test plugins)."""

    def __init__(self, app):
        import threading
        import time

        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(
            uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        )
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.05)

    def stop(self):
        self.server.should_exit = True
        self.thread.join(30)


@pytest.fixture
def serve_app():
    """``serve_app(app) -> ThreadServer`` on 127.0.0.1, stopped after the test."""
    servers = []

    def serve(app):
        servers.append(ThreadServer(app))
        return servers[-1]

    yield serve
    for server in servers:
        server.stop()
