import numpy as np
import pytest

from iphd.errors import ConfigError
from iphd.reid.sampler import PKSampler

# 10 identities with 1..6 crops each, shuffled in dataset order; pid 7 has a single crop.
_COUNTS = {3: 5, 7: 1, 11: 4, 12: 6, 20: 2, 21: 3, 30: 4, 31: 5, 40: 4, 41: 2}
PIDS = np.random.default_rng(0).permutation(np.repeat(list(_COUNTS), list(_COUNTS.values())))


def test_every_batch_has_p_distinct_identities_times_k():
    sampler = PKSampler(PIDS, p=3, k=4, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 10 // 3
    seen = []
    for batch in batches:
        assert len(batch) == 12
        pids = PIDS[batch].reshape(3, 4)
        assert np.all(pids == pids[:, :1])  # K crops of one identity per row
        assert len(set(pids[:, 0])) == 3
        seen.extend(pids[:, 0])
        for row, idx in zip(pids[:, 0], np.reshape(batch, (3, 4)), strict=True):
            if _COUNTS[int(row)] >= 4:  # without replacement when there are enough crops
                assert len(set(idx.tolist())) == 4
    assert len(seen) == len(set(seen))  # each identity at most once per epoch


def test_small_identities_are_sampled_with_replacement():
    sampler = PKSampler(PIDS, p=10, k=4, seed=0)
    (batch,) = list(sampler)
    rows = np.reshape(batch, (10, 4))
    single = rows[PIDS[rows[:, 0]] == 7][0]
    assert set(single.tolist()) == {int(np.flatnonzero(PIDS == 7)[0])}


def test_deterministic_by_seed_and_epoch():
    a = list(PKSampler(PIDS, p=2, k=2, seed=5, epoch=3))
    b = PKSampler(PIDS, p=2, k=2, seed=5)
    assert list(b) != a
    b.set_epoch(3)
    assert list(b) == a
    assert list(PKSampler(PIDS, p=2, k=2, seed=6, epoch=3)) != a


def test_ranks_get_disjoint_identities():
    shards = [list(PKSampler(PIDS, p=2, k=2, seed=0, epoch=1, rank=r, world_size=2))
              for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 10 // 4
    ids = [{int(p) for batch in shard for p in PIDS[batch]} for shard in shards]
    assert not ids[0] & ids[1]


def test_too_few_identities_or_bad_settings_raise():
    with pytest.raises(ConfigError, match="needs P=6 identities on each of 2 rank"):
        PKSampler(PIDS, p=6, k=4, rank=0, world_size=2)
    with pytest.raises(ConfigError, match="P and K"):
        PKSampler(PIDS, p=0)
    with pytest.raises(ConfigError, match="rank 2"):
        PKSampler(PIDS, p=2, rank=2, world_size=2)
