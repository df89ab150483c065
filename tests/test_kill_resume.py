"""A 2-process CPU run whose one process is killed ends promptly, and ``--resume auto`` finishes it with
the weights of a run that was never stopped."""

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_pretrain_args

ROOT = Path(__file__).resolve().parents[1]


def launch(tiny_demo, out: Path, port: int, tag: str, *extra: str) -> subprocess.Popen:
    cmd = [
        sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
        "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
        "--main_process_port", str(port), str(ROOT / "tools" / "pretrain.py"), "--cpu",
        *tiny_pretrain_args(tiny_demo, out, "stages.1.steps=12", "train.save_every=2",
                            "data.test_manifest=null", "train.eval_every=0"),
        *extra,
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT), "VIDEOVL_TEST_RUN": tag}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def rank_pid(tag: str, rank: int) -> int | None:
    """The pid of the training process of ``rank`` in the run marked ``tag`` (read from /proc)."""
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"VIDEOVL_TEST_RUN={tag}".encode() in env and f"RANK={rank}".encode() in env:
            return int(pid)
    return None


def final_weights(out: Path) -> dict:
    from safetensors.torch import load_file

    last = sorted((out / "checkpoints").glob("step_*"))[-1]
    return load_file(str(last / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds the processes through /proc")
def test_a_killed_process_ends_the_run_promptly_and_resume_auto_finishes_it(tiny_demo, tmp_path):
    straight = launch(tiny_demo, tmp_path / "straight", 29631, uuid.uuid4().hex)
    assert straight.wait(timeout=600) == 0, straight.stdout.read()[-3000:]

    tag, out = uuid.uuid4().hex, tmp_path / "killed"
    run = launch(tiny_demo, out, 29632, tag)
    deadline = time.monotonic() + 300
    while not list((out / "checkpoints").glob("step_0000000[4-9]")) and run.poll() is None:
        assert time.monotonic() < deadline, "no checkpoint after 300 s"
        time.sleep(0.2)
    pid = rank_pid(tag, 1)
    assert run.poll() is None and pid is not None, "the run ended before a process could be killed"
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()
    try:
        code = run.wait(timeout=120)
    except subprocess.TimeoutExpired:
        run.kill()
        pytest.fail("the run still hung 120 s after one of its processes was killed")
    waited = time.monotonic() - killed_at
    assert code != 0 and waited < 60, f"exit {code} after {waited:.0f} s"

    resumed = launch(tiny_demo, out, 29633, uuid.uuid4().hex, "--resume", "auto")
    log = resumed.communicate(timeout=600)[0]
    assert resumed.returncode == 0, log[-3000:]
    assert "resumed from" in log
    a, b = final_weights(tmp_path / "straight"), final_weights(out)
    assert a.keys() == b.keys() and all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in a)
