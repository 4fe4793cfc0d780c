import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from splitlearn.data import dirichlet_partition, feature_slices, iid_partition, stratified_split, vertical_split

PROPERTY = settings(max_examples=60, deadline=2000, derandomize=True)


def assert_partition(parts: list[torch.Tensor], n: int) -> None:
    """Disjoint, sorted int64 index tensors covering range(n)."""
    for part in parts:
        assert part.dtype == torch.int64 and torch.equal(part, part.sort().values)
    assert torch.equal(torch.cat(parts).sort().values, torch.arange(n))


@PROPERTY
@given(n=st.integers(1, 400), data=st.data(), seed=st.integers(0, 2**32 - 1))
def test_iid_partition_properties(n, data, seed):
    k = data.draw(st.integers(1, n))
    parts = iid_partition(n, k, seed=seed)
    assert len(parts) == k
    assert_partition(parts, n)
    sizes = [len(p) for p in parts]
    assert max(sizes) - min(sizes) <= 1
    assert all(torch.equal(a, b) for a, b in zip(parts, iid_partition(n, k, seed=seed)))


def test_iid_partition_shuffles():
    assert not torch.equal(iid_partition(100, 2, seed=0)[0], torch.arange(50))


@PROPERTY
@given(
    labels=st.lists(st.integers(0, 5), min_size=1, max_size=300),
    data=st.data(),
    alpha=st.floats(0.001, 100),
    seed=st.integers(0, 2**32 - 1),
)
def test_dirichlet_partition_properties(labels, data, alpha, seed):
    n = len(labels)
    k = data.draw(st.integers(1, min(n, 12)))
    min_size = data.draw(st.integers(0, n // k))
    parts = dirichlet_partition(torch.tensor(labels), k, alpha=alpha, seed=seed, min_size=min_size)
    assert len(parts) == k
    assert_partition(parts, n)
    assert min(map(len, parts)) >= min_size
    again = dirichlet_partition(torch.tensor(labels), k, alpha=alpha, seed=seed, min_size=min_size)
    assert all(torch.equal(a, b) for a, b in zip(parts, again))


def mean_label_entropy(alpha: float) -> float:
    labels = torch.arange(10).repeat_interleave(100)
    entropies = []
    for seed in range(5):
        for part in dirichlet_partition(labels, 8, alpha=alpha, seed=seed):
            p = labels[part].bincount(minlength=10).double() / len(part)
            entropies.append(float(-(p[p > 0] * p[p > 0].log()).sum()))
    return sum(entropies) / len(entropies)


def test_small_alpha_is_more_skewed_than_large_alpha():
    skewed, even = mean_label_entropy(0.1), mean_label_entropy(100.0)
    assert skewed < 1.5 < 2.2 < even <= math.log(10)


def test_dirichlet_repairs_parts_that_draws_leave_short():
    labels = torch.arange(4).repeat_interleave(10)
    parts = dirichlet_partition(labels, 20, alpha=0.001, seed=0, min_size=2)
    assert_partition(parts, 40)
    assert [len(p) for p in parts] == [2] * 20


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(num_parts=0), "num_parts must be >= 1"),
        (dict(num_parts=11), "num_parts=11 exceeds the 10 samples"),
        (dict(alpha=0.0), "alpha must be > 0"),
        (dict(alpha=float("nan")), "alpha must be > 0"),
        (dict(min_size=4), "min_size=4 is impossible: 3 parts of at least 4 need 12 samples, there are 10"),
        (dict(min_size=-1), "min_size=-1 is impossible"),
        (dict(labels=torch.zeros(5, 2)), "labels must be one-dimensional"),
    ],
)
def test_dirichlet_bad_arguments(kwargs, match):
    args = dict(labels=torch.arange(10) % 2, num_parts=3, alpha=1.0, seed=0) | kwargs
    with pytest.raises(ValueError, match=match):
        dirichlet_partition(**args)


@pytest.mark.parametrize(("n", "k", "match"), [(5, 0, "num_parts must be >= 1"), (5, 6, "num_parts=6 exceeds the 5 samples")])
def test_iid_bad_arguments(n, k, match):
    with pytest.raises(ValueError, match=match):
        iid_partition(n, k, seed=0)


@PROPERTY
@given(size=st.integers(1, 200), data=st.data())
def test_feature_slices_are_contiguous_and_near_equal(size, data):
    k = data.draw(st.integers(1, size))
    slices = feature_slices(size, k)
    assert slices[0].start == 0 and slices[-1].stop == size
    assert all(a.stop == b.start for a, b in zip(slices, slices[1:]))
    lengths = [s.stop - s.start for s in slices]
    assert lengths == sorted(lengths, reverse=True) and lengths[0] - lengths[-1] <= 1


def test_vertical_split_tabular_and_image_width():
    table = torch.arange(35.0).reshape(5, 7)
    parts = vertical_split(table, 3)
    assert [p.shape[1] for p in parts] == [3, 2, 2]
    assert torch.equal(torch.cat(parts, dim=1), table)
    images = torch.rand(2, 1, 4, 6)
    left, right = vertical_split(images, 2, dim=-1)
    assert left.shape == right.shape == (2, 1, 4, 3)
    assert torch.equal(left, images[..., :3]) and torch.equal(right, images[..., 3:])
    sized = vertical_split(table, [1, 4, 2])  # each site's own number of columns
    assert [p.shape[1] for p in sized] == [1, 4, 2] and torch.equal(sized[1], table[:, 1:5])


@pytest.mark.parametrize(
    ("num_parts", "dim", "match"),
    [(2, 0, "dim=0 must name a per-sample dimension"), (2, 2, "dim=2 must name"), (2, -3, "dim=-3 must name"),
     (8, 1, "num_parts=8 exceeds the 7 features"), (0, 1, "num_parts must be >= 1"),
     ([3, 3], 1, r"chunk sizes \[3, 3\] must be positive and add up to the 7 features"), ([8, -1], 1, "must be positive")],
)  # fmt: skip
def test_vertical_split_bad_arguments(num_parts, dim, match):
    with pytest.raises(ValueError, match=match):
        vertical_split(torch.zeros(5, 7), num_parts, dim=dim)


@PROPERTY
@given(labels=st.lists(st.integers(0, 3), min_size=2, max_size=200), fraction=st.floats(0.05, 0.95), seed=st.integers(0, 99))
def test_stratified_split_properties(labels, fraction, seed):
    labels = torch.tensor(labels)
    counts = labels.bincount()
    expected = [round(fraction * int(c)) for c in counts]
    if sum(expected) in (0, len(labels)):
        with pytest.raises(ValueError, match="leaves an empty split"):
            stratified_split(labels, test_fraction=fraction, seed=seed)
        return
    train, test = stratified_split(labels, test_fraction=fraction, seed=seed)
    assert_partition([train, test], len(labels))
    assert labels[test].bincount(minlength=len(counts)).tolist() == expected


def test_stratified_split_bad_fraction():
    with pytest.raises(ValueError, match="test_fraction must be in"):
        stratified_split(np.zeros(10), test_fraction=1.0, seed=0)
