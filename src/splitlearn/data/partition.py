"""Splitting samples (train/test, horizontal parties) and features (vertical parties)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

_DIRICHLET_TRIES = 100


def _check_parts(num_parts: int, available: int, what: str) -> None:
    if num_parts < 1:
        raise ValueError(f"num_parts must be >= 1, got {num_parts}")
    if num_parts > available:
        raise ValueError(f"num_parts={num_parts} exceeds the {available} {what} available")


def _as_tensors(parts: list[np.ndarray]) -> list[torch.Tensor]:
    return [torch.from_numpy(np.sort(p)).long() for p in parts]


def stratified_split(
    labels: torch.Tensor, *, test_fraction: float, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sorted (train, test) indices; each class sends ``round(test_fraction * size)`` samples to test."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        k = round(test_fraction * len(idx))
        test.append(idx[:k])
        train.append(idx[k:])
    train_idx, test_idx = _as_tensors([np.concatenate(train or [[]]), np.concatenate(test or [[]])])
    if not len(train_idx) or not len(test_idx):
        raise ValueError(
            f"test_fraction={test_fraction} leaves an empty split "
            f"({len(train_idx)} train, {len(test_idx)} test samples)"
        )
    return train_idx, test_idx


def iid_partition(n: int, num_parts: int, *, seed: int) -> list[torch.Tensor]:
    """Shuffle ``range(n)`` into ``num_parts`` disjoint sorted index tensors whose sizes differ by <= 1."""
    _check_parts(num_parts, n, "samples")
    return _as_tensors(np.array_split(np.random.default_rng(seed).permutation(n), num_parts))


def dirichlet_partition(
    labels: torch.Tensor, num_parts: int, *, alpha: float, seed: int, min_size: int = 1
) -> list[torch.Tensor]:
    """Non-IID partition: each class is shared among parts in proportions drawn from Dirichlet(alpha).

    Small ``alpha`` gives parts dominated by few classes, large ``alpha`` approaches IID. Draws
    are repeated until every part holds ``min_size`` samples; after 100 failed draws, samples
    are moved one at a time from the largest part to the short ones. Returns disjoint sorted
    index tensors covering ``range(len(labels))``.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be one-dimensional, got shape {labels.shape}")
    _check_parts(num_parts, len(labels), "samples")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    if min_size < 0 or min_size * num_parts > len(labels):
        raise ValueError(
            f"min_size={min_size} is impossible: {num_parts} parts of at least {min_size} "
            f"need {min_size * num_parts} samples, there are {len(labels)}"
        )
    rng = np.random.default_rng(seed)
    by_class = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    for _ in range(_DIRICHLET_TRIES):
        chunks: list[list[np.ndarray]] = [[] for _ in range(num_parts)]
        for idx in by_class:
            cuts = (np.cumsum(rng.dirichlet(np.full(num_parts, alpha))) * len(idx)).astype(int)[:-1]
            for part, chunk in zip(chunks, np.split(rng.permutation(idx), cuts)):
                part.append(chunk)
        parts = [np.concatenate(c) for c in chunks]
        if min(map(len, parts)) >= min_size:
            return _as_tensors(parts)
    while min(sizes := [len(p) for p in parts]) < min_size:
        short, donor = int(np.argmin(sizes)), int(np.argmax(sizes))
        j = rng.integers(sizes[donor])
        parts[short] = np.append(parts[short], parts[donor][j])
        parts[donor] = np.delete(parts[donor], j)
    return _as_tensors(parts)


def feature_slices(size: int, num_parts: int) -> list[slice]:
    """Contiguous slices covering ``range(size)``; the first ``size % num_parts`` are one longer."""
    _check_parts(num_parts, size, "features")
    q, r = divmod(size, num_parts)
    bounds = np.cumsum([0] + [q + (i < r) for i in range(num_parts)]).tolist()
    return [slice(a, b) for a, b in zip(bounds, bounds[1:])]


def vertical_split(features: torch.Tensor, parts: int | Sequence[int], *, dim: int = 1) -> list[torch.Tensor]:
    """Split each sample's features into contiguous chunks along ``dim`` (views): ``parts``
    near-equal ones (:func:`feature_slices`), or chunks of the given sizes, in order (e.g. each
    site's number of table columns).

    ``dim`` indexes the batched tensor: 1 for tabular columns, -1 for image width.
    """
    ndim = features.dim()
    d = dim % ndim if -ndim <= dim < ndim else 0
    if not d:
        raise ValueError(f"dim={dim} must name a per-sample dimension of the {ndim}-d batch: 1 to {ndim - 1} or -1 to {1 - ndim}")
    size = features.shape[d]
    if isinstance(parts, int):
        slices = feature_slices(size, parts)
    else:
        sizes = [int(k) for k in parts]
        if len(sizes) < 1 or min(sizes) < 1 or sum(sizes) != size:
            raise ValueError(f"chunk sizes {sizes} must be positive and add up to the {size} features along dim {dim}")
        bounds = np.cumsum([0, *sizes]).tolist()
        slices = [slice(a, b) for a, b in zip(bounds, bounds[1:])]
    return [features[(slice(None),) * d + (s,)] for s in slices]


def deal(labels: torch.Tensor, num_parts: int, *, partition: str, alpha: float, seed: int) -> list[torch.Tensor]:
    """Training indices of each of ``num_parts`` clients: ``partition`` is "iid" or "dirichlet"."""
    if partition == "iid":
        return iid_partition(len(labels), num_parts, seed=seed)
    if partition == "dirichlet":
        return dirichlet_partition(labels, num_parts, alpha=alpha, seed=seed)
    raise ValueError(f"partition must be 'iid' or 'dirichlet', got {partition!r}")
