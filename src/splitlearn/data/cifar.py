"""CIFAR-10 and CIFAR-100 from their published binary versions (never the pickled ones).

Each record is the label byte(s) followed by 3072 pixel bytes (1024 red, 1024 green, 1024 blue,
rows top to bottom). The published files hold 10000 (CIFAR-10) or 50000/10000 (CIFAR-100)
records, but only the record structure is required, so smaller files load too.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from splitlearn.data.dataset import ArrayDataset, DataError

_PIXELS = 3 * 32 * 32
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz"
CIFAR100_URL = "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"


def _locate(root: str | os.PathLike, folder: str, marker: str, url: str) -> Path:
    """``root`` itself or ``root/folder``, whichever holds ``marker``."""
    root = Path(root)
    for path in (root, root / folder):
        if (path / marker).is_file():
            return path
    raise DataError(
        f"no {marker} in {root} or {root / folder}; download and extract {url} "
        "and pass the extracted folder or its parent as root"
    )


def _class_names(path: Path, count: int) -> tuple[str, ...]:
    try:
        names = tuple(line.strip() for line in path.read_text().splitlines() if line.strip())
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read class names from {path}: {e}") from e
    if len(names) != count:
        raise DataError(f"{path} lists {len(names)} class names, expected {count}")
    return names


def _records(path: Path, label_limits: dict[str, int], what: str) -> np.ndarray:
    """Records of ``path`` as a (n, labels + 3072) uint8 array, label bytes checked against their limits."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as e:
        raise DataError(f"cannot read {what} file {path}: {e}") from e
    size = len(label_limits) + _PIXELS
    if not data.size or data.size % size:
        raise DataError(
            f"{path} is truncated or not a {what} binary file: its {data.size} bytes are not "
            f"a positive multiple of the {size}-byte record"
        )
    records = data.reshape(-1, size)
    for column, (kind, limit) in enumerate(label_limits.items()):
        if (bad := np.flatnonzero(records[:, column] >= limit)).size:
            raise DataError(
                f"{path} is not a {what} binary file: record {bad[0]} has {kind} label "
                f"{records[bad[0], column]}, expected 0-{limit - 1}"
            )
    return records


def _dataset(records: np.ndarray, column: int, classes: tuple[str, ...], name: str, first_id: int) -> ArrayDataset:
    return ArrayDataset(
        torch.from_numpy(records[:, -_PIXELS:].reshape(-1, 3, 32, 32)).float().div_(255),
        torch.from_numpy(records[:, column]).long(),
        torch.arange(first_id, first_id + len(records)),
        classes,
        name,
    )


def load_cifar10(root: str | os.PathLike) -> tuple[ArrayDataset, ArrayDataset]:
    """CIFAR-10 (train, test): images (3, 32, 32) in [0, 1]; test ids follow the train ids.

    ``root`` is ``cifar-10-batches-bin`` (data_batch_1.bin ... data_batch_5.bin, test_batch.bin,
    batches.meta.txt) or its parent.
    """
    folder = _locate(root, "cifar-10-batches-bin", "batches.meta.txt", CIFAR10_URL)
    classes = _class_names(folder / "batches.meta.txt", 10)
    limits = {"class": len(classes)}
    train = np.concatenate([_records(folder / f"data_batch_{i}.bin", limits, "CIFAR-10") for i in range(1, 6)])
    test = _records(folder / "test_batch.bin", limits, "CIFAR-10")
    return _dataset(train, 0, classes, "cifar10", 0), _dataset(test, 0, classes, "cifar10", len(train))


def load_cifar100(
    root: str | os.PathLike, *, label: Literal["fine", "coarse"] = "fine"
) -> tuple[ArrayDataset, ArrayDataset]:
    """CIFAR-100 (train, test) labelled by its 100 fine or 20 coarse classes; images as for CIFAR-10.

    ``root`` is ``cifar-100-binary`` (train.bin, test.bin, fine_label_names.txt,
    coarse_label_names.txt) or its parent.
    """
    if label not in ("fine", "coarse"):
        raise ValueError(f"label must be 'fine' or 'coarse', got {label!r}")
    folder = _locate(root, "cifar-100-binary", "fine_label_names.txt", CIFAR100_URL)
    limits = {"coarse": 20, "fine": 100}
    classes = _class_names(folder / f"{label}_label_names.txt", limits[label])
    column = list(limits).index(label)
    train, test = (_records(folder / f"{split}.bin", limits, "CIFAR-100") for split in ("train", "test"))
    return _dataset(train, column, classes, "cifar100", 0), _dataset(test, column, classes, "cifar100", len(train))
