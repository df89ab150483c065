"""benchmarks/bench_step.py: the step profile runs on the real loop and its parts add up to the step."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from tests.conftest import tiny_pretrain_args

pytestmark = pytest.mark.usefixtures("one_thread")


def load_bench():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_step.py"
    spec = importlib.util.spec_from_file_location("bench_step", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_step_profile_splits_a_real_step_into_parts_that_add_up(tiny_demo, tmp_path, capsys):
    bench = load_bench()
    out = tmp_path / "run"
    figures = bench.main(["--steps", "2", "--warmup", "1", "--output-dir", str(out),
                          *tiny_pretrain_args(tiny_demo, out, "train.locked_text_cache=20000")])  # fmt: skip
    parts = ("data_s", "visual_s", "text_s", "losses_s", "optimizer_s")
    assert sum(figures[k] for k in parts) == pytest.approx(figures["step_s"])
    assert all(figures[k] > 0 for k in ("step_s", "visual_s", "optimizer_s", "visual_flops_per_s"))
    # the demo's joint stage locks the text tower; with its memo on, repeated captions come from the memo,
    # so the step pays at most what running the tower on every caption would
    assert 0 <= figures["text_s"] <= figures["text_every_caption_s"]
    printed = capsys.readouterr().out
    for row in ("data wait", "visual fwd+bwd", "text fwd", "losses, heads", "optimizer", "matmul peak"):
        assert row in printed


def test_the_compiled_step_is_timed_against_the_eager_one(tiny_demo, tmp_path, capsys):
    bench = load_bench()
    out = tmp_path / "run"
    figures = bench.main(["--steps", "1", "--warmup", "1", "--output-dir", str(out), "--compile", "aot_eager",
                          *tiny_pretrain_args(tiny_demo, out)])  # fmt: skip
    assert figures["other_step_s"] > 0 and figures["base_step_s"] > 0 and figures["other_first_step_s"] > 0
    assert "train.compile=aot_eager: step" in capsys.readouterr().out
