"""PK identity batch sampler (P identities × K crops per batch) for the triplet loss, shardable."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
import torch.distributed as dist

from iphd.errors import ConfigError


class PKSampler(torch.utils.data.Sampler[list[int]]):
    """Batches of P distinct identities × K crops each, for ``DataLoader(batch_sampler=...)``.

    Every epoch the identities are shuffled with (seed, epoch), the same on every rank, and cut
    into groups of P; group ``b`` goes to rank ``b % world_size``, so within an epoch the ranks
    see disjoint identities. An epoch visits each identity at most once: about
    ``num_identities // P`` batches over all ranks (the remainder that does not fill a batch on
    every rank is left for other epochs). Each identity contributes K of its crops, drawn
    without replacement, or with replacement when it has fewer than K. A batch lists the K
    indices of its first identity, then the K of the second, and so on.

    Args:
        pids: identity of each dataset item, in dataset order.
        p: identities per batch (16 in paper B).
        k: crops per identity (4 in paper B).
        seed: shuffling seed, the same on every rank.
        epoch: epoch to start at (see ``set_epoch``).
        rank: this process's rank; default: from ``torch.distributed`` when initialised, else 0.
        world_size: number of processes; default: from ``torch.distributed``, else 1.

    Raises:
        ConfigError: P or K < 1, a rank outside the world size, or fewer than P × world_size
            identities (no batch could be formed).
    """

    def __init__(
        self,
        pids: Sequence[int] | np.ndarray,
        p: int = 16,
        k: int = 4,
        seed: int = 0,
        epoch: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
    ) -> None:
        if p < 1 or k < 1:
            raise ConfigError(f"P and K must be >= 1, got P={p}, K={k}")
        distributed = dist.is_available() and dist.is_initialized()
        if world_size is None:
            world_size = dist.get_world_size() if distributed else 1
        if rank is None:
            rank = dist.get_rank() if distributed else 0
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank {rank} is outside world size {world_size}")
        labels = np.asarray(pids, dtype=np.int64).reshape(-1)
        # Items sorted by identity: identity i owns order[starts[i] : starts[i] + counts[i]].
        self._order = np.argsort(labels, kind="stable")
        self.identities, self._starts, self._counts = np.unique(
            labels[self._order], return_index=True, return_counts=True
        )
        if len(self.identities) < p * world_size:
            raise ConfigError(
                f"a PK batch needs P={p} identities on each of {world_size} rank(s), but the "
                f"dataset has {len(self.identities)}; lower P or add identities"
            )
        self.p = p
        self.k = k
        self.seed = seed
        self.epoch = epoch
        self.rank = rank
        self.world_size = world_size

    def set_epoch(self, epoch: int) -> None:
        """Change the draw (call once per epoch, on every rank)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.identities) // (self.p * self.world_size)

    def batches(self) -> np.ndarray:
        """Return this rank's batches of the current epoch as a (len(self), P × K) index array."""
        rng = np.random.default_rng((self.seed, self.epoch))
        n_batches = len(self)
        per_epoch = n_batches * self.world_size * self.p
        chosen = rng.permutation(len(self.identities))[:per_epoch]
        mine = chosen.reshape(n_batches, self.world_size, self.p)[:, self.rank].reshape(-1)
        # A random permutation inside every identity (sort by (identity, random key)) gives
        # draws without replacement; identities with fewer than K crops draw with replacement.
        keys = rng.random(len(self._order))
        group = np.repeat(np.arange(len(self.identities)), self._counts)
        shuffled = self._order[np.lexsort((keys, group))]
        starts = self._starts[mine][:, None]
        counts = self._counts[mine][:, None]
        slot = np.broadcast_to(np.arange(self.k), (len(mine), self.k))
        resampled = rng.integers(0, counts, size=(len(mine), self.k))
        offset = np.where(counts >= self.k, slot, resampled)
        return shuffled[starts + offset].reshape(n_batches, self.p * self.k)

    def __iter__(self) -> Iterator[list[int]]:
        yield from self.batches().tolist()
