"""Small data sets bundled with scikit-learn (no files or network needed)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch

from splitlearn.data.dataset import ArrayDataset
from splitlearn.data.partition import stratified_split


def _split(full: ArrayDataset, test_fraction: float, seed: int) -> tuple[ArrayDataset, ArrayDataset]:
    train, test = stratified_split(full.labels, test_fraction=test_fraction, seed=seed)
    return full.subset(train), full.subset(test)


def _dataset(bunch, features: np.ndarray, name: str) -> ArrayDataset:
    return ArrayDataset(
        torch.from_numpy(features).float(),
        torch.from_numpy(bunch.target).long(),
        classes=tuple(str(c) for c in bunch.target_names),
        name=name,
    )


def load_digits(*, test_fraction: float = 0.2, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """UCI handwritten digits (1797 samples): images (1, 8, 8) in [0, 1], stratified train/test split.

    Sample ids are the row numbers in scikit-learn's copy.
    """
    import sklearn.datasets  # here, not at import: 0.65 s of every command's start

    bunch = sklearn.datasets.load_digits()
    full = _dataset(bunch, bunch.images[:, None] / 16.0, "digits")
    return _split(full, test_fraction, seed)


def load_breast_cancer(*, test_fraction: float = 0.2, seed: int = 0) -> tuple[ArrayDataset, ArrayDataset]:
    """Wisconsin diagnostic breast cancer (569 samples, 30 features), stratified train/test split.

    Both splits are standardised with the mean and standard deviation of the train split.
    Sample ids are the row numbers in scikit-learn's copy.
    """
    import sklearn.datasets

    bunch = sklearn.datasets.load_breast_cancer()
    train, test = _split(_dataset(bunch, bunch.data, "breast_cancer"), test_fraction, seed)
    mean, std = train.features.mean(0), train.features.std(0)
    return tuple(replace(ds, features=(ds.features - mean) / std) for ds in (train, test))
