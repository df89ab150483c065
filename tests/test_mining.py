from pathlib import Path

import faiss
import numpy as np
import pytest
import torch
from conftest import tiny_pretrain_args

from videovl.config import load_config
from videovl.data.samplers import NeighbourBatchSampler, WeightedBatchSampler
from videovl.data.tokenizer import fill_token_ids, load_tokenizer
from videovl.models.factory import create_model
from videovl.train.data import build_stage_data
from videovl.train.mining import (
    brute_force_neighbours,
    build_index,
    embed_for_mining,
    mining_dataset,
    nearest_neighbours,
    negative_similarity,
    recall_at_k,
    sampler_negative_similarity,
)

DEMO_CONFIG = Path(__file__).resolve().parents[1] / "configs" / "demo.yaml"


def clustered(n: int, dim: int = 32, clusters: int = 20, noise: float = 0.4, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    return (centres[rng.integers(clusters, size=n)] + noise * rng.standard_normal((n, dim))).astype(
        np.float32
    )


def test_exact_faiss_matches_brute_force():
    x = np.random.default_rng(1).standard_normal((700, 24)).astype(np.float32)
    found, exact = nearest_neighbours(x, 10), brute_force_neighbours(x, 10, chunk_size=128)
    assert found.shape == (700, 10) and found.dtype == np.int64
    # Random floats leave no ties, so the ranked lists agree entry for entry.
    np.testing.assert_array_equal(found, exact)


def test_ivf_recall_on_clustered_data():
    x = clustered(3000)
    index = build_index(x, ivf_threshold=1000, k=16)
    assert index.nlist > 1 and 1 <= index.nprobe < index.nlist  # inverted lists, not a full scan
    found = nearest_neighbours(x, 16, ivf_threshold=1000)
    assert recall_at_k(found, brute_force_neighbours(x, 16)) >= 0.9


def test_unclustered_data_falls_back_to_exact_search():
    x = np.random.default_rng(4).standard_normal((3000, 32)).astype(np.float32)  # no cluster structure
    assert isinstance(build_index(x, ivf_threshold=1000, k=16), faiss.IndexFlatIP)
    forced = build_index(x, ivf_threshold=1000, k=16, exact_fallback=False)
    assert isinstance(forced, faiss.IndexIVFFlat) and forced.nprobe > forced.nlist / 8


def test_self_is_never_a_neighbour_even_among_duplicates():
    rng = np.random.default_rng(2)
    x = np.repeat(rng.standard_normal((4, 8)), 6, axis=0).astype(np.float32)  # 4 vectors, 6 copies each
    for found in (nearest_neighbours(x, 8), nearest_neighbours(x, 8, ivf_threshold=1, nlist=2, nprobe=2)):
        assert not (found == np.arange(len(x))[:, None]).any()
        # The 5 other copies of a row come first: they tie at similarity 1.
        assert all(set(found[i, :5]) == set(range(i // 6 * 6, i // 6 * 6 + 6)) - {i} for i in range(len(x)))


def test_fewer_samples_than_k_pad_with_minus_one():
    x = np.random.default_rng(3).standard_normal((4, 8)).astype(np.float32)
    for found in (nearest_neighbours(x, 6), brute_force_neighbours(x, 6)):
        assert (found[:, 3:] == -1).all()
        assert all(set(row[:3]) == set(range(4)) - {i} for i, row in enumerate(found))


def test_negative_similarity_matches_the_pairwise_mean():
    x = torch.nn.functional.normalize(torch.randn(9, 5), dim=1)
    sims = x @ x.T
    assert negative_similarity(x) == pytest.approx(
        float(sims[~torch.eye(9, dtype=torch.bool)].mean()), abs=1e-6
    )
    assert negative_similarity(x.numpy(), [0, 3, 4]) == pytest.approx(
        float((sims[0, 3] + sims[0, 4] + sims[3, 4]) * 2 / 6), abs=1e-6
    )


def test_neighbour_batches_hold_harder_negatives_than_random_batches():
    x = clustered(2000)
    neighbours = nearest_neighbours(x, 16)
    mined = NeighbourBatchSampler(neighbours, batch_size=32, per_seed=7, seed=0)
    random = WeightedBatchSampler([len(x)], [1.0], batch_size=32, seed=0)
    samplers = {"mined": mined, "random": random}
    hardness = {name: sampler_negative_similarity(x, s, range(20)) for name, s in samplers.items()}
    assert hardness["random"] == pytest.approx(
        np.mean([negative_similarity(x, random.global_batch(step)) for step in range(20)])
    )
    assert hardness["mined"] > hardness["random"] + 0.1, hardness


@pytest.fixture(scope="module")
def tiny(tiny_demo, tmp_path_factory):
    cfg = load_config(DEMO_CONFIG, tiny_pretrain_args(tiny_demo, tmp_path_factory.mktemp("run")))
    fill_token_ids(cfg.model.text, load_tokenizer(cfg.model.text))
    torch.manual_seed(0)
    return cfg, create_model(cfg.model).eval()


def test_embed_for_mining_rows_follow_the_training_dataset(tiny):
    cfg, model = tiny
    data = build_stage_data(cfg, 1)["video"]
    dataset = mining_dataset(data, cfg)
    assert [s.path for s in dataset.datasets[0].samples] == [s.path for s in data.dataset.datasets[0].samples]
    emb = embed_for_mining(model, dataset, batch_size=16)
    assert emb.shape == (len(dataset), cfg.model.embed_dim) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    with torch.no_grad():
        for i in (0, 21, len(dataset) - 1):
            one = model.encode_video(dataset[i]["pixels"][None]).clip[0].numpy()
            np.testing.assert_allclose(emb[i], one, atol=1e-4)
    # One process's share: every other row, in place (no process group, so nothing else is gathered).
    share = embed_for_mining(model, dataset, batch_size=16, rank=1, world_size=2)
    np.testing.assert_allclose(share[1::2], emb[1::2], atol=1e-5)
    assert not share[0::2].any()
    assert model.training is False  # the caller's mode is restored


def test_mining_dataset_keeps_the_order_of_concatenated_sources(tiny):
    cfg, model = tiny
    data = build_stage_data(cfg, 0)["image"]  # image-text and image-label over the same manifest
    n = data.sizes[0]
    emb = embed_for_mining(model.train(), mining_dataset(data, cfg), batch_size=32)
    assert model.training  # restored
    assert emb.shape[0] == sum(data.sizes) == 2 * n
    np.testing.assert_allclose(emb[:n], emb[n:], atol=1e-5)
    assert not np.allclose(emb[0], emb[1])


def test_benchmark_script_runs_at_a_tiny_size():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_mining.py"
    spec = importlib.util.spec_from_file_location("bench_mining", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    threads = torch.get_num_threads()
    try:
        args = ["--sizes", "300", "--dim", "16", "--k", "4", "--ivf-from", "200", "--data", "clustered"]
        rows = bench.main([*args, "--clusters", "10", "--threads", str(threads)])
    finally:
        torch.set_num_threads(threads)
    assert [r["method"] for r in rows] == ["torch", "faiss-flat", "faiss-ivf"]
    assert rows[1]["recall"] == pytest.approx(1.0) and rows[2]["recall"] > 0.5
    assert all(r["seconds"] > 0 and r["speedup"] > 0 for r in rows)
