import numpy as np
import pytest

from siamese.data.splits import stratified_split
from siamese.errors import UserError

LABELS = np.repeat(np.arange(5), [10, 20, 40, 11, 50])


def test_stratified_split_is_disjoint_complete_and_per_class():
    split = stratified_split(LABELS, (0.7, 0.1, 0.2), seed=0)
    joined = np.concatenate(list(split.values()))
    assert sorted(joined.tolist()) == list(range(len(LABELS)))
    for label, size in enumerate([10, 20, 40, 11, 50]):
        counts = {name: int((LABELS[idx] == label).sum()) for name, idx in split.items()}
        assert counts["val"] == round(size * 0.1)
        assert counts["test"] == round(size * 0.2)
        assert counts["train"] == size - counts["val"] - counts["test"]


def test_stratified_split_follows_the_seed():
    a = stratified_split(LABELS, (0.7, 0.1, 0.2), seed=0)
    b = stratified_split(LABELS, (0.7, 0.1, 0.2), seed=0)
    c = stratified_split(LABELS, (0.7, 0.1, 0.2), seed=1)
    assert all((a[k] == b[k]).all() for k in a)
    assert any(not np.array_equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize("fractions", [(0.5, 0.2, 0.2), (0.8, 0.2, 0.0), (0.5, 0.5)])
def test_bad_fractions_are_refused(fractions):
    with pytest.raises(UserError, match="split_fractions"):
        stratified_split(LABELS, fractions, seed=0)


def test_fractions_that_leave_a_split_empty_are_refused():
    with pytest.raises(UserError, match="give the val split 0 class"):
        stratified_split(np.repeat(np.arange(3), 3), (0.8, 0.1, 0.1), seed=0)
    # 10 images a class: val and test need 0.2 to hold 2 of each
    with pytest.raises(UserError, match=r"try data.split_fractions=\[0.60,0.20,0.20\]"):
        stratified_split(np.repeat(np.arange(3), 10), (0.8, 0.1, 0.1), seed=0)
