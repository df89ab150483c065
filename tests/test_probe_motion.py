"""benchmarks/probe_motion.py: the linear probes that say which tower holds motion and word order back."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from videovl.config import Config
from videovl.data.tokenizer import fill_token_ids, load_tokenizer
from videovl.models.checkpoint import save_checkpoint
from videovl.models.factory import create_model, model_config

pytestmark = pytest.mark.usefixtures("one_thread")
CLASSES = ["left then up", "up then left", "down then right"]


def load_probe():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "probe_motion.py"
    spec = importlib.util.spec_from_file_location("probe_motion", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def features(labels: list[int], same_for_partners: bool, seed: int) -> np.ndarray:
    """One-hot class features plus noise; with ``same_for_partners`` classes 0 and 1 look alike."""
    rng = np.random.default_rng(seed)
    ids = [0 if same_for_partners and y == 1 else y for y in labels]
    return np.eye(3)[ids] * 3 + 0.1 * rng.standard_normal((len(labels), 3))


def test_the_probe_reads_what_the_features_hold():
    probe = load_probe().probe
    y = [0, 1, 2] * 20
    clear = probe(features(y, False, 0), y, features(y, False, 1), y, CLASSES, 1.0)
    assert clear == {"top1": 100.0, "order_pairs": 100.0}
    # Features that do not tell the order partners apart: at most one of each pair can win.
    blind = probe(features(y, True, 0), y, features(y, True, 1), y, CLASSES, 1.0)
    assert 25.0 <= blind["order_pairs"] <= 75.0 and blind["top1"] <= 85.0


def test_the_benchmark_runs_on_a_checkpoint(tiny_demo, tmp_path, capsys):
    cfg = Config(model=model_config("test"))
    cfg.data.num_frames, cfg.data.image_size = 4, 32
    tokenizer = load_tokenizer(cfg.model.text)
    fill_token_ids(cfg.model.text, tokenizer)
    torch.manual_seed(0)
    ckpt = save_checkpoint(
        create_model(cfg.model), cfg, tmp_path / "model", extra_files=tokenizer.save_pretrained
    )
    results = load_probe().main(
        ["--checkpoint", str(ckpt), "--root", str(tiny_demo), "--c", "1", "--workers", "0"]
    )
    kinds = ("text tower", "text joint", "video", "frames", "frame mean")
    assert set(results) == {f"{kind} C=1" for kind in kinds}
    assert all(0 <= r["top1"] <= 100 for r in results.values())
    out = capsys.readouterr().out
    assert "motion top-1" in out and "video" in out
