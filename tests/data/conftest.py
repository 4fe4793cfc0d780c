"""Tiny on-disk fixtures in the published formats, written fresh for each test."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from splitlearn.data.idx import write_idx

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
TILE_CLASSES = ("01_TUMOR", "02_STROMA", "03_COMPLEX")


def cifar_records(rng: np.random.Generator, n: int, label_limits: tuple[int, ...]) -> np.ndarray:
    """``n`` random records: one byte per label limit, then 3072 pixel bytes."""
    labels = [rng.integers(0, limit, (n, 1)) for limit in label_limits]
    return np.hstack([*labels, rng.integers(0, 256, (n, 3072))]).astype(np.uint8)


@pytest.fixture
def cifar10_dir(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """cifar-10-batches-bin with 5 train batches of 2 records and 3 test records."""
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    rng = np.random.default_rng(10)
    (folder / "batches.meta.txt").write_text("\n".join(CIFAR10_CLASSES) + "\n\n")
    batches = [cifar_records(rng, 2, (10,)) for _ in range(5)]
    for i, batch in enumerate(batches, 1):
        (folder / f"data_batch_{i}.bin").write_bytes(batch.tobytes())
    test = cifar_records(rng, 3, (10,))
    (folder / "test_batch.bin").write_bytes(test.tobytes())
    return folder, np.concatenate(batches), test


@pytest.fixture
def cifar100_dir(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    """cifar-100-binary with 6 train and 4 test records."""
    folder = tmp_path / "cifar-100-binary"
    folder.mkdir()
    rng = np.random.default_rng(100)
    (folder / "fine_label_names.txt").write_text("".join(f"fine{i}\n" for i in range(100)))
    (folder / "coarse_label_names.txt").write_text("".join(f"coarse{i}\n" for i in range(20)))
    train, test = cifar_records(rng, 6, (20, 100)), cifar_records(rng, 4, (20, 100))
    (folder / "train.bin").write_bytes(train.tobytes())
    (folder / "test.bin").write_bytes(test.tobytes())
    return folder, train, test


@pytest.fixture
def fmnist_dir(tmp_path: Path) -> tuple[Path, dict[str, np.ndarray]]:
    """Fashion-MNIST folder of gzipped IDX files with 6 train and 4 test images."""
    rng = np.random.default_rng(28)
    arrays = {
        "train-images-idx3-ubyte": rng.integers(0, 256, (6, 28, 28), dtype=np.uint8),
        "train-labels-idx1-ubyte": np.array([0, 9, 3, 3, 1, 7], np.uint8),
        "t10k-images-idx3-ubyte": rng.integers(0, 256, (4, 28, 28), dtype=np.uint8),
        "t10k-labels-idx1-ubyte": np.array([5, 2, 9, 0], np.uint8),
    }
    folder = tmp_path / "fmnist"
    folder.mkdir()
    for stem, array in arrays.items():
        write_idx(folder / f"{stem}.gz", array)
    return folder, arrays


@pytest.fixture
def tiles_dir(tmp_path: Path) -> tuple[Path, np.ndarray]:
    """Image folder of 3 classes x 5 random 6x4 RGB TIFF tiles; returns it and all pixels in id order."""
    rng = np.random.default_rng(150)
    root = tmp_path / "tiles"
    pixels = []
    for name in TILE_CLASSES:
        (root / name).mkdir(parents=True)
        for i in range(5):
            tile = rng.integers(0, 256, (4, 6, 3), dtype=np.uint8)
            Image.fromarray(tile).save(root / name / f"tile_{i}.tif")
            pixels.append(tile)
    return root, np.stack(pixels)
