import numpy as np
import pytest

from videovl.config import StageConfig
from videovl.data.samplers import NeighbourBatchSampler, WeightedBatchSampler
from videovl.train.schedule import StagedSchedule, warmup_cosine


def _take(sampler, n):
    """The rows of the first ``n`` batches."""
    it = iter(sampler)
    return [[d.row for d in next(it)] for _ in range(n)]


def test_batches_are_draws_of_step_and_slot_in_the_global_batch():
    kw = dict(sizes=[50, 30], weights=[1, 1], batch_size=4, world_size=2, seed=3, start_step=7)
    for rank in (0, 1):
        sampler = WeightedBatchSampler(rank=rank, **kw)
        first = next(iter(sampler))
        assert [(d.step, d.slot) for d in first] == [(7, 4 * rank + k) for k in range(4)]
        assert [d.row for d in first] == sampler.global_batch(7)[4 * rank : 4 * rank + 4].tolist()
    neighbours = NeighbourBatchSampler(np.zeros((40, 2), np.int64), 4, 1, rank=1, world_size=2, start_step=3)
    assert [(d.step, d.slot) for d in next(iter(neighbours))] == [(3, 4), (3, 5), (3, 6), (3, 7)]


def test_processes_get_distinct_slices_of_the_same_global_batch():
    kw = dict(sizes=[50, 30], weights=[1, 1], batch_size=4, world_size=2, seed=3)
    r0 = _take(WeightedBatchSampler(rank=0, **kw), 20)
    r1 = _take(WeightedBatchSampler(rank=1, **kw), 20)
    for a, b in zip(r0, r1):
        assert len(a) == len(b) == 4
        assert not set(a) & set(b)  # distinct samples, no repeats within a global batch


def test_resume_draws_the_same_batches():
    kw = dict(sizes=[10, 20], weights=[1, 3], batch_size=5, seed=1)
    straight = _take(WeightedBatchSampler(**kw), 6)
    resumed = _take(WeightedBatchSampler(start_step=4, **kw), 2)
    assert straight[4:] == resumed


def test_weights_mix_sources():
    s = WeightedBatchSampler([100, 100], [3, 1], batch_size=64, seed=0)
    idx = np.concatenate(_take(s, 50))
    share = (idx < 100).mean()
    assert 0.7 < share < 0.8


def test_bad_weights():
    with pytest.raises(ValueError, match="weight"):
        WeightedBatchSampler([10], [1, 2], 4)
    with pytest.raises(ValueError, match="positive sum"):
        WeightedBatchSampler([10], [0], 4)


def test_neighbour_batches_hold_neighbourhoods():
    n, k = 200, 8
    rng = np.random.default_rng(0)
    neighbours = rng.integers(0, n, size=(n, k))
    s = NeighbourBatchSampler(neighbours, batch_size=16, per_seed=3, seed=0)
    batch = [d.row for d in next(iter(s))]
    assert len(batch) == len(set(batch)) == 16
    # the first sample is a seed; most of the next three are among its neighbours
    assert sum(i in set(neighbours[batch[0]]) for i in batch[1:4]) >= 2


def test_schedule_warmup_cosine_and_stages():
    assert warmup_cosine(0, 100, 1.0, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 1.0, 10) == pytest.approx(1.0)
    assert warmup_cosine(100, 100, 1.0, 10, min_ratio=0.1) == pytest.approx(0.1)
    sched = StagedSchedule(
        [StageConfig(steps=10, lr=1.0, warmup_steps=2), StageConfig(steps=10, lr=0.5, warmup_steps=2)]
    )
    assert sched(1) == pytest.approx(1.0) and sched(10) == pytest.approx(0.25)  # stage 2 warms up anew
    lrs = [sched(s) for s in range(2, 10)]
    assert lrs == sorted(lrs, reverse=True)
