from collections import Counter

import numpy as np
import pytest

from siamese.data.pairs import PairSampler, default_pairs_per_class
from siamese.errors import UserError

# 4 classes of sizes 5, 3, 4, 6 at catalog indices 100..117
LABELS = np.array([0] * 5 + [1] * 3 + [2] * 4 + [3] * 6)
INDICES = np.arange(100, 100 + len(LABELS))
LABEL_OF = dict(zip(INDICES.tolist(), LABELS.tolist()))


def test_default_rule_is_smallest_class_minus_one():
    assert default_pairs_per_class(LABELS) == 2
    # a single-image class gives no positives and does not count
    assert default_pairs_per_class(np.array([0, 1, 1, 1, 2, 2, 2, 2])) == 2


def test_pairs_are_balanced_and_labelled_by_class():
    sampler = PairSampler(INDICES, LABELS, pairs_per_class=3, seed=1)
    pairs = sampler.pairs()
    assert len(pairs) == len(sampler) == 2 * 3 * 4
    assert sum(same for _, _, same in pairs) == len(pairs) // 2
    for a, b, same in pairs:
        assert a in LABEL_OF and b in LABEL_OF and a != b
        assert same == int(LABEL_OF[a] == LABEL_OF[b])


def test_every_class_gets_its_positives_and_negatives():
    pairs = PairSampler(INDICES, LABELS, pairs_per_class=2, seed=3).pairs()
    positives = Counter(LABEL_OF[a] for a, _, same in pairs if same)
    negative_sides = Counter(LABEL_OF[a] for a, b, same in pairs if not same) + Counter(
        LABEL_OF[b] for a, b, same in pairs if not same
    )
    assert positives == {0: 2, 1: 2, 2: 2, 3: 2}
    assert set(negative_sides) == {0, 1, 2, 3}


def test_positive_pairs_are_distinct_while_the_class_allows():
    # class 1 has 3 images: 3 distinct unordered pairs, so 3 positives are all different
    pairs = PairSampler(INDICES, LABELS, pairs_per_class=3, seed=0).pairs()
    class1 = [frozenset((a, b)) for a, b, same in pairs if same and LABEL_OF[a] == 1]
    assert len(set(class1)) == 3


def test_fixed_pairs_do_not_change_with_epoch_and_follow_the_seed():
    sampler = PairSampler(INDICES, LABELS, seed=7, stream="val", resample=False)
    first = sampler.pairs()
    sampler.set_epoch(5)
    assert sampler.pairs() == first
    assert PairSampler(INDICES, LABELS, seed=7, stream="val", resample=False).pairs() == first
    assert PairSampler(INDICES, LABELS, seed=8, stream="val", resample=False).pairs() != first
    assert PairSampler(INDICES, LABELS, seed=7, stream="test", resample=False).pairs() != first


def test_training_pairs_are_fresh_each_epoch_and_reproducible():
    sampler = PairSampler(INDICES, LABELS, seed=7, stream="train")
    epoch0 = list(sampler)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch0 != epoch1
    again = PairSampler(INDICES, LABELS, seed=7, stream="train")
    again.set_epoch(1)
    assert list(again) == epoch1


def test_single_image_classes_warn_and_two_classes_are_needed():
    with pytest.warns(UserWarning, match="single image"):
        sampler = PairSampler(np.arange(5), np.array([0, 0, 1, 1, 2]), pairs_per_class=1)
    assert len(sampler) == 4
    with pytest.raises(UserError, match="pairs need at least 2 such classes"):
        PairSampler(np.arange(3), np.array([0, 0, 0]))


def test_m_per_class_batches_hold_runs_of_one_class_and_the_same_pairs():
    plain = PairSampler(INDICES, LABELS, pairs_per_class=3, seed=5).pairs()
    grouped = PairSampler(INDICES, LABELS, pairs_per_class=3, seed=5, m_per_class=4).pairs()
    assert sorted(grouped) == sorted(plain)  # the same pairs, only in another order
    # runs of 2 positives of one class (k=3: runs of 2 and 1), each followed by as many negatives
    position, runs = 0, []
    while position < len(grouped):
        run = [p for p in grouped[position : position + 2] if p[2] == 1]
        assert len({LABEL_OF[a] for a, b, _ in run} | {LABEL_OF[b] for a, b, _ in run}) == 1
        negatives = grouped[position + len(run) : position + 2 * len(run)]
        assert len(run) >= 1 and [same for _, _, same in negatives] == [0] * len(run)
        runs.append((LABEL_OF[run[0][0]], len(run)))
        position += 2 * len(run)
    assert sorted(runs) == sorted([(c, 2) for c in range(4)] + [(c, 1) for c in range(4)])


@pytest.mark.parametrize("m", [3, 0, 8])
def test_m_per_class_must_be_even_and_within_the_positives(m):
    with pytest.raises(UserError, match=r"data.m_per_class must be null or an even number from 2 to 6"):
        PairSampler(INDICES, LABELS, pairs_per_class=3, seed=5, m_per_class=m)
