"""FSDP2 (fully_shard) trains a SigerLM backbone on two CPU processes like one process does."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("distributed") / "fsdp_train.py"


@pytest.mark.slow
def test_fsdp_on_two_cpu_processes_matches_one_process():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    single = subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=600)
    assert single.returncode == 0, single.stderr[-2000:]
    torchrun = Path(sys.executable).with_name("torchrun")
    sharded = subprocess.run(
        [str(torchrun), "--standalone", "--nproc_per_node=2", str(SCRIPT)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert sharded.returncode == 0, sharded.stderr[-3000:]
    a = json.loads(single.stdout.strip().splitlines()[-1])
    b = json.loads(sharded.stdout.strip().splitlines()[-1])
    assert len(a) == len(b) == 4
    assert max(abs(x - y) for x, y in zip(a, b, strict=True)) <= 1e-5
