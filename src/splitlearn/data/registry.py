"""Data sets by name, each loaded as a (train, test) pair."""

from __future__ import annotations

import os
from collections.abc import Callable

from splitlearn.data.cifar import CIFAR10_URL, CIFAR100_URL, load_cifar10, load_cifar100
from splitlearn.data.dataset import ArrayDataset, DataError
from splitlearn.data.embedded import load_breast_cancer, load_digits
from splitlearn.data.idx import load_fashion_mnist
from splitlearn.data.imagefolder import HISTOLOGY_URL, load_histology, load_image_folder
from splitlearn.data.table import load_csv

Split = tuple[ArrayDataset, ArrayDataset]
Root = str | os.PathLike | None


def _root(name: str, root: Root, source: str) -> str | os.PathLike:
    if root is None:
        raise DataError(f"data set {name!r} is read from files: pass root (--data-root); get them from {source}")
    return root


def _own(name: str, root: Root, what: str) -> str | os.PathLike:
    if root is None:
        raise DataError(f"data set {name!r} is read from {what}: pass its path as root (--data-root)")
    return root


# Uniform loaders: (root, seed, **options) -> (train, test). The scikit-learn sets ignore root,
# the published splits of Fashion-MNIST and CIFAR ignore seed.
DATASETS: dict[str, Callable[..., Split]] = {
    "digits": lambda root, seed, **kw: load_digits(seed=seed, **kw),
    "breast_cancer": lambda root, seed, **kw: load_breast_cancer(seed=seed, **kw),
    "fashion_mnist": lambda root, seed, **kw: load_fashion_mnist(root, **kw),
    "cifar10": lambda root, seed, **kw: load_cifar10(_root("cifar10", root, CIFAR10_URL), **kw),
    "cifar100": lambda root, seed, **kw: load_cifar100(_root("cifar100", root, CIFAR100_URL), **kw),
    "histology": lambda root, seed, **kw: load_histology(_root("histology", root, HISTOLOGY_URL), seed=seed, **kw),
    # your own files: a CSV table (a row per sample; label_column=...), or a folder of class sub-folders of images
    "csv": lambda root, seed, **kw: load_csv(_own("csv", root, "a CSV file of your own, a row per sample"), seed=seed, **kw),
    "imagefolder": lambda root, seed, **kw: load_image_folder(
        _own("imagefolder", root, "a folder of your own with one sub-folder of images per class"), seed=seed, **kw),
}


EMBEDDED = frozenset({"digits", "breast_cancer"})  # shipped with scikit-learn: no files of a site's own


def load_dataset(name: str, *, root: Root = None, seed: int = 0, **kwargs) -> Split:
    """Load data set ``name`` as (train, test); ``kwargs`` go to its loader (e.g. ``label="coarse"``)."""
    try:
        loader = DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown data set {name!r}; known: {', '.join(DATASETS)}") from None
    return loader(root, seed, **kwargs)
