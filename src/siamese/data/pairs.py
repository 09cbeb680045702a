"""Balanced positive/negative image pairs, and samplers that hand them to a DataLoader.

A pair is ``(index_a, index_b, same)``: two catalog indices and 1 if they show the same class.
"""

from __future__ import annotations

import warnings
from typing import Iterator

import numpy as np
import torch
from torch.utils.data import DistributedSampler

from siamese.data.batches import PairKey
from siamese.errors import UserError, as_number, check

Pair = tuple[int, int, int]

# Separate random streams, so that e.g. changing the number of val pairs leaves test pairs alone.
STREAMS = {"train": 0, "val": 1, "test": 2}


def checked_pairs_per_class(**per_split: int | None) -> dict[str, int | None]:
    """``data.<split>_pairs_per_class`` of each split: null (the tutorial's rule) or a number from 1."""
    checked = {}
    for name, value in per_split.items():
        key = f"data.{name}_pairs_per_class"
        value = None if value is None else as_number(value, key, int)
        check(value is None or value >= 1, f"{key} must be null (the tutorial's rule) or at least 1, got {value}")
        checked[name] = value
    return checked


def default_pairs_per_class(labels: np.ndarray) -> int:
    """The tutorial's rule: as many positives per class as the smallest class has images, minus one."""
    sizes = np.bincount(labels)
    sizes = sizes[sizes >= 2]
    return int(sizes.min()) - 1 if len(sizes) else 0


def process_group_place() -> tuple[int, int]:
    """(rank, number of processes) of this process in torch.distributed's group; (0, 1) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


class PairSampler(DistributedSampler):
    """Balanced pairs over ``indices`` (catalog indices whose classes are ``labels``).

    Each class with at least two images gives ``pairs_per_class`` distinct positive pairs
    (more than a class can give is an error) and as many negatives, pairing one of its images with
    an image of another class chosen uniformly. The pairs depend only on ``seed``, ``stream``
    and the epoch: ``resample=True`` draws new ones each epoch (training; Lightning calls
    ``set_epoch``), ``resample=False`` keeps epoch 0's forever (validation and test).

    ``m_per_class`` (training): instead of one shuffle of all pairs, the positive pairs of a class
    come ``m_per_class // 2`` at a time, each such run followed by as many negatives, so a batch
    of ``B`` pairs holds about ``m_per_class`` images of each of ``B / m_per_class`` classes
    (pytorch-metric-learning's ``MPerClassSampler``, for pairs): more same-class images for an
    in-batch miner. ``None``: every batch is a random draw of the epoch's pairs.

    Iterating yields a ``PairKey`` ``(index_a, index_b, same, seed, position)``: the seed of that
    sample's augmentation, so that what an epoch sees does not depend on workers, on other uses
    of the global random state, or on whether the run was resumed; and the pair's position in
    the epoch, so that scores gathered from several processes can be put back in pair order.

    Under DDP each process iterates its own share of the epoch's pairs (``rank`` of
    ``num_replicas``; by default its place in torch.distributed's group when iteration starts): the
    runs of ``m_per_class`` (or single pairs) dealt out in turn, so every rank's batches stay
    class-balanced and the ranks' shares are disjoint; a share shorter than the longest is topped
    up with its own first pairs, so every rank runs the same number of batches. It is a
    ``DistributedSampler``, so Lightning neither wraps nor reshuffles it, and hands it ``set_epoch``.
    """

    def __init__(
        self,
        indices: np.ndarray,
        labels: np.ndarray,
        pairs_per_class: int | None = None,
        seed: int = 0,
        stream: str = "train",
        resample: bool = True,
        m_per_class: int | None = None,
        num_replicas: int | None = None,
        rank: int | None = None,
    ) -> None:
        # DistributedSampler's own __init__ is not called: it needs a dataset and a process group now.
        self.num_replicas, self.rank = num_replicas, rank
        self.shuffle, self.drop_last = resample, False
        self.indices = np.asarray(indices, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.int64)
        if len(self.indices) != len(self.labels):
            raise ValueError("indices and labels must have the same length")
        classes, counts = np.unique(self.labels, return_counts=True)
        self.pair_classes = classes[counts >= 2]
        if len(self.pair_classes) < 2:
            raise UserError(
                f"the {stream} split has {len(self.pair_classes)} class(es) with at least 2 images; "
                "pairs need at least 2 such classes: add images or choose another split"
            )
        if len(self.pair_classes) < len(classes):
            warnings.warn(
                f"{len(classes) - len(self.pair_classes)} class(es) of the {stream} split have a "
                "single image and give no positive pairs",
                stacklevel=2,
            )
        self.pairs_per_class = (
            default_pairs_per_class(self.labels) if pairs_per_class is None else int(pairs_per_class)
        )
        if self.pairs_per_class < 1:
            raise UserError(f"data.{stream}_pairs_per_class must be at least 1, got {pairs_per_class}")
        possible = {int(c): n * (n - 1) // 2 for c, n in zip(classes, counts) if n >= 2}
        too_small = [c for c, n in possible.items() if n < self.pairs_per_class]
        if too_small:
            c = too_small[0]
            raise UserError(
                f"data.{stream}_pairs_per_class={self.pairs_per_class} asks for more positive pairs than "
                f"{len(too_small)} class(es) of the {stream} split can give (class {c}: {possible[c]} distinct "
                "pairs); lower it, or set it to null for the tutorial's rule"
            )
        if m_per_class is not None and (m_per_class < 2 or m_per_class % 2 or m_per_class // 2 > self.pairs_per_class):
            raise UserError(
                f"data.m_per_class must be null or an even number from 2 to {2 * self.pairs_per_class} "
                f"(twice the {stream} positives per class), got {m_per_class}"
            )
        self.m_per_class = m_per_class
        self.seed = int(seed)
        self.stream = stream
        self.resample = resample
        self.epoch = 0
        self._members = {int(c): self.indices[self.labels == c] for c in classes}
        self._cache: tuple[int, list[Pair], list[int]] | None = None

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _place(self) -> tuple[int, int]:
        """(rank, number of processes) this sampler shares the pairs among."""
        rank, replicas = process_group_place()
        replicas = replicas if self.num_replicas is None else int(self.num_replicas)
        rank = rank if self.rank is None else int(self.rank)
        return rank, replicas

    def __len__(self) -> int:
        total = 2 * self.pairs_per_class * len(self.pair_classes)
        return -(-total // self._place()[1])  # the longest share, which every share is topped up to

    def __iter__(self) -> Iterator[PairKey]:
        pairs, seeds, units = self._epoch()
        keys = [PairKey(*pair, seed, position) for position, (pair, seed) in enumerate(zip(pairs, seeds))]
        rank, replicas = self._place()
        if replicas == 1:
            return iter(keys)
        bounds = np.cumsum([0, *units])
        share = [key for unit in range(rank, len(units), replicas) for key in keys[bounds[unit] : bounds[unit + 1]]]
        size = len(self)
        if not share:  # more processes than runs
            share = keys[:1]
        return iter((share * (-(-size // len(share))))[:size])

    def pairs(self) -> list[Pair]:
        """The pairs of the current epoch (of epoch 0 when not resampling), in sampling order."""
        return self._epoch()[0]

    def _epoch(self) -> tuple[list[Pair], list[int], list[int]]:
        """The epoch's pairs, their augmentation seeds, and the sizes of the runs that stay together
        on one process (``m_per_class`` runs, or single pairs)."""
        epoch = self.epoch if self.resample else 0
        if self._cache is None or self._cache[0] != epoch:
            rng = np.random.default_rng([self.seed, STREAMS.get(self.stream, 3), epoch])
            pairs, units = self._draw(rng)
            self._cache = (epoch, pairs, rng.integers(0, 2**31 - 1, size=len(pairs)).tolist(), units)
        return self._cache[1], self._cache[2], self._cache[3]

    def _draw(self, rng: np.random.Generator) -> tuple[list[Pair], list[int]]:
        classes = list(self._members)
        k = self.pairs_per_class
        pairs: list[Pair] = []
        runs: list[list[Pair]] = []  # m_per_class: each class's positives, m_per_class // 2 at a time
        for c in self.pair_classes:
            members = self._members[int(c)]
            first, second = _distinct_pairs(len(members), k, rng)
            positives = [(int(members[i]), int(members[j]), 1) for i, j in zip(first, second)]
            pairs += positives
            if self.m_per_class:
                half = self.m_per_class // 2
                runs += [positives[start : start + half] for start in range(0, k, half)]

            others = [o for o in classes if o != c]
            anchors = rng.choice(members, size=k)
            other_classes = rng.choice(others, size=k)
            for anchor, other in zip(anchors, other_classes):
                pairs.append((int(anchor), int(rng.choice(self._members[int(other)])), 0))
        order = rng.permutation(len(pairs))
        if not self.m_per_class:
            return [pairs[i] for i in order], [1] * len(pairs)
        negatives = [pairs[i] for i in order if not pairs[i][2]]
        ordered: list[Pair] = []
        units: list[int] = []
        for run in (runs[i] for i in rng.permutation(len(runs))):
            start = len(ordered) // 2  # negatives handed out so far
            ordered += run + negatives[start : start + len(run)]
            units.append(2 * len(run))
        return ordered, units


def _distinct_pairs(n: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``k`` distinct pairs (i, j), i != j, of positions 0..n-1 (k <= n*(n-1)/2)."""
    first, second = np.triu_indices(n, k=1)
    chosen = rng.choice(len(first), size=k, replace=False)
    i, j = first[chosen], second[chosen]
    swap = rng.random(k) < 0.5  # random order within a pair, so neither side is always the lower index
    return np.where(swap, j, i), np.where(swap, i, j)
