"""The train step: schedule, decay groups, metrics, plot, model folder, exact resume after
SIGKILL, a damaged checkpoint, and DDP on two CPU processes."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from sigerlm.training.options import TrainOptions
from sigerlm.training.train import lr_at, param_groups
from sigerlm_testkit import install_testkit, write_distribution

MANIFEST = {
    "siger": 1,
    "name": "train-test",
    "seed": 1,
    "model": {"profile": "tiny", "adapter": {"use": "random-embedding", "vocab_size": 64}},
    "data": {
        "train": {"use": "random-tokens", "vocab_size": 64, "seq_len": 16, "batch_size": 4, "num_batches": 5},
        "valid": {"use": "random-tokens", "vocab_size": 64, "seq_len": 16, "batch_size": 4, "num_batches": 2},
    },
    "steps": [
        {
            "use": "train",
            "max_steps": 12,
            "lr": 0.01,
            "warmup_steps": 2,
            "eval_every": 4,
            "checkpoint_every": 3,
            "progress": False,
        }
    ],
}


def losses(path: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in path.read_text().splitlines() if line.strip()]


def test_schedule_warms_up_then_decays_to_the_floor():
    o = TrainOptions(max_steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(0, o, 100) == pytest.approx(0.1) and lr_at(9, o, 100) == pytest.approx(1.0)
    assert lr_at(10, o, 100) == pytest.approx(1.0)
    assert lr_at(55, o, 100) == pytest.approx(0.55)
    assert lr_at(100, o, 100) == pytest.approx(0.1)
    assert lr_at(50, o, 50) == pytest.approx(0.1)  # a schedule fitted to fewer steps ends at its floor there
    values = [lr_at(s, o, 100) for s in range(10, 101)]
    assert all(a >= b for a, b in zip(values, values[1:], strict=False))


def test_tagged_parameters_get_no_weight_decay():
    from sigerlm.model.backbone import Backbone
    from sigerlm.model.config import SigerConfig

    model = Backbone(SigerConfig.from_profile("tiny"))
    decay, no_decay = param_groups(model, 0.1)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in no_decay["params"]} >= {"layers.0.mixer.A_log", "layers.0.mixer.D", "norm_f.weight"}
    assert "layers.0.mixer.in_proj.weight" in {names[id(p)] for p in decay["params"]}
    assert no_decay["weight_decay"] == 0.0


def test_training_learns_and_writes_what_a_user_sees(run_manifest, tmp_path):
    result = run_manifest(MANIFEST).results["steps"][0]["results"]
    out = tmp_path / "run"
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 13))
    assert {"loss", "lr", "grad_norm", "tokens_per_s", "elapsed"} <= set(rows[0])
    assert [r["step"] for r in rows if "valid_loss" in r] == [4, 8, 12]
    assert rows[-1]["loss"] < rows[0]["loss"]  # random tokens: it learns their unigram statistics
    assert result["valid_perplexity"] > 1 and result["uniform_perplexity"] == 64  # the adapter's baseline
    assert (out / "loss.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step-00000009", "step-00000012"]
    assert (out / "model" / "model.safetensors").is_file()


def test_runs_are_reproducible_on_cpu(run_manifest, tmp_path):
    a = run_manifest(MANIFEST, out_dir=tmp_path / "a")
    b = run_manifest(MANIFEST, out_dir=tmp_path / "b")
    assert losses(tmp_path / "a" / "metrics.jsonl") == losses(tmp_path / "b" / "metrics.jsonl")
    assert a.results["steps"][0]["results"]["final_loss"] == b.results["steps"][0]["results"]["final_loss"]


SLOW_PLUGIN = textwrap.dedent(
    """
    import time
    from pydantic import BaseModel, ConfigDict
    from sigerlm import hookimpl
    from sigerlm_testkit.components import RandomTokens

    class Options(BaseModel):
        model_config = ConfigDict(extra="forbid")
        delay: float = 0.1

    class Slow:
        def __init__(self, run, options):
            self.inner = RandomTokens(run.seed, run.rank, 64, 16, 4, 5, run.world_size)
            self.delay = options.delay

        def __iter__(self):
            for batch in self.inner:
                time.sleep(self.delay)
                yield batch

    @hookimpl
    def register_datasets(register):
        register("slow-tokens", Slow, options=Options)
    """
)


def siger_env(tmp_path):
    site = tmp_path / "site"
    write_distribution(site, "slow-data", {"slow_data.hooks": SLOW_PLUGIN}, {"slow": "slow_data.hooks"})
    install_testkit(site)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGER_")}
    env["PYTHONPATH"] = str(site)
    return env


def write_manifest(tmp_path, **train):
    manifest = json.loads(json.dumps(MANIFEST))
    manifest["plugins"] = ["slow", "testkit"]
    manifest["data"]["train"] = {"use": "slow-tokens", "delay": 0.1}
    manifest["steps"][0].update(train)
    path = tmp_path / "m.json"
    path.write_text(json.dumps(manifest))
    return path


def siger(*args, env):
    return [str(Path(sys.executable).with_name("siger")), *map(str, args)]


@pytest.mark.slow
def test_sigkill_then_resume_gives_the_uninterrupted_losses(tmp_path):
    env = siger_env(tmp_path)
    manifest = write_manifest(tmp_path)
    subprocess.run(siger("run", manifest, "-o", tmp_path / "full", env=env), env=env, check=True, capture_output=True)
    full = losses(tmp_path / "full" / "metrics.jsonl")

    proc = subprocess.Popen(
        siger("run", manifest, "-o", tmp_path / "cut", env=env),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    metrics = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill in the middle: after step 7, past the checkpoint of step 6
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 7:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert json.loads((tmp_path / "cut" / "run.json").read_text())["status"] == "running"
    assert len(losses(metrics)) < len(full)
    out = subprocess.run(
        siger("run", manifest, "-o", tmp_path / "cut", "--resume", env=env), env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "resumed from" in out.stderr
    resumed = losses(metrics)
    assert len(resumed) == len(full)
    assert max(abs(a - b) for a, b in zip(resumed, full, strict=True)) <= 1e-6


@pytest.mark.slow
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous(tmp_path):
    env = siger_env(tmp_path)
    manifest = write_manifest(tmp_path, checkpoint_every=2, keep_checkpoints=3)
    env_fast = dict(env)
    subprocess.run(
        siger("run", manifest, "-o", tmp_path / "run", env=env_fast), env=env_fast, check=True, capture_output=True
    )
    full = losses(tmp_path / "run" / "metrics.jsonl")
    latest = tmp_path / "run" / "checkpoints" / "step-00000012" / "model.safetensors"
    data = bytearray(latest.read_bytes())
    data[-5] ^= 0xFF
    latest.write_bytes(bytes(data))
    record = json.loads((tmp_path / "run" / "run.json").read_text())
    record["status"] = "running"
    record["completed_steps"] = []
    (tmp_path / "run" / "run.json").write_text(json.dumps(record))
    out = subprocess.run(
        siger("run", manifest, "-o", tmp_path / "run", "--resume", env=env), env=env, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    assert "step-00000012 is damaged" in out.stderr and "step-00000010" in out.stderr
    assert max(abs(a - b) for a, b in zip(losses(tmp_path / "run" / "metrics.jsonl"), full, strict=True)) <= 1e-6


@pytest.mark.slow
def test_two_cpu_processes_match_one_with_the_same_global_batch(tmp_path):
    one = json.loads(json.dumps(MANIFEST))
    one["steps"][0].update(max_steps=6, eval_every=None, checkpoint_every=None, save_model=None, plot=False)
    two = json.loads(json.dumps(one))
    for split in ("train", "valid"):
        two["data"][split]["batch_size"] = 2  # per rank: 2 ranks x 2 = the same global batch of 4
    (tmp_path / "one.json").write_text(json.dumps(one))
    (tmp_path / "two.json").write_text(json.dumps(two))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGER_")}
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONPATH"] = str(install_testkit(tmp_path / "site"))
    subprocess.run(
        siger("run", tmp_path / "one.json", "-o", tmp_path / "one", env=env), env=env, check=True, capture_output=True
    )
    torchrun = Path(sys.executable).with_name("torchrun")
    out = subprocess.run(
        [
            str(torchrun),
            "--standalone",
            "--nproc_per_node=2",
            "-m",
            "sigerlm.cli",
            "run",
            str(tmp_path / "two.json"),
            "-o",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    a, b = losses(tmp_path / "one" / "metrics.jsonl"), losses(tmp_path / "two" / "metrics.jsonl")
    assert len(a) == len(b) == 6
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 1e-5
