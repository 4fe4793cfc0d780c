"""IDX files (the MNIST format) and the Fashion-MNIST loader."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from splitlearn.data.dataset import ArrayDataset, DataError

_GZIP_MAGIC = b"\x1f\x8b"
_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}

FASHION_MNIST_DEFAULT_ROOT = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_ENV = "SPLITLEARN_FASHION_MNIST"
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
_HOW_TO_GET = (
    "install it with `apt-get install dataset-fashion-mnist` (files go to "
    f"{FASHION_MNIST_DEFAULT_ROOT}), or pass --data-root / set {FASHION_MNIST_ENV} "
    "to a folder holding the four *-ubyte(.gz) files"
)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file, gzipped or raw (detected by the gzip magic), into a native-endian array."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataError(f"cannot read IDX file {path}: {e}") from e
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path} is a corrupt or truncated gzip file: {e}") from e
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _DTYPES or data[3] == 0:
        raise DataError(
            f"{path} is not an IDX file: it starts with {data[:4].hex() or 'nothing'}, expected "
            "00 00, a type code (08 09 0b 0c 0d 0e) and a dimension count >= 1"
        )
    dtype, ndim = np.dtype(_DTYPES[data[2]]), data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path} is truncated: its {ndim}-dimension header needs {header} bytes, file has {len(data)}")
    dims = [int(d) for d in np.frombuffer(data, ">u4", ndim, 4)]
    expected, actual = int(np.prod(dims)) * dtype.itemsize, len(data) - header
    if actual != expected:
        items = f"{dims[0]} items" + (f" of {'x'.join(map(str, dims[1:]))}" if ndim > 1 else "")
        problem = "is truncated" if actual < expected else "has trailing bytes"
        raise DataError(
            f"{path} {problem}: header says {items} {dtype.newbyteorder('=').name} = {expected} bytes, "
            f"file has {actual} after the {header}-byte header"
        )
    return np.frombuffer(data, dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike, array: np.ndarray) -> Path:
    """Write ``array`` as an IDX file, gzip-compressed when ``path`` ends in ``.gz``."""
    path, array = Path(path), np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None or array.ndim == 0:
        raise ValueError(f"IDX cannot hold a {array.ndim}-d {array.dtype} array")
    data = (
        bytes([0, 0, code, array.ndim])
        + np.asarray(array.shape, ">u4").tobytes()
        + array.astype(_DTYPES[code]).tobytes()
    )
    path.write_bytes(gzip.compress(data, mtime=0) if path.suffix == ".gz" else data)
    return path


def _find(root: Path, stem: str) -> Path:
    for path in (root / stem, root / f"{stem}.gz"):
        if path.is_file():
            return path
    raise DataError(f"Fashion-MNIST file {root / stem}(.gz) not found; {_HOW_TO_GET}")


def _split(root: Path, prefix: str, first_id: int) -> ArrayDataset:
    images_path, labels_path = _find(root, f"{prefix}-images-idx3-ubyte"), _find(root, f"{prefix}-labels-idx1-ubyte")
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.dtype != np.uint8 or images.shape[1:] != (28, 28):
        raise DataError(f"{images_path} holds {images.dtype} {images.shape}, expected uint8 (n, 28, 28) images")
    if labels.dtype != np.uint8 or labels.shape != images.shape[:1]:
        raise DataError(
            f"{labels_path} holds {labels.dtype} {labels.shape}, expected {len(images)} uint8 labels "
            f"to match {images_path.name}"
        )
    if labels.max(initial=0) >= len(FASHION_MNIST_CLASSES):
        raise DataError(f"{labels_path} has label {labels.max()}, Fashion-MNIST labels are 0-9")
    return ArrayDataset(
        torch.from_numpy(images).unsqueeze(1).float().div_(255),
        torch.from_numpy(labels).long(),
        torch.arange(first_id, first_id + len(labels)),
        FASHION_MNIST_CLASSES,
        "fashion_mnist",
    )


def load_fashion_mnist(root: str | os.PathLike | None = None) -> tuple[ArrayDataset, ArrayDataset]:
    """Fashion-MNIST (train, test): images (1, 28, 28) in [0, 1]; test ids follow the train ids.

    ``root`` defaults to ``$SPLITLEARN_FASHION_MNIST`` or /usr/share/datasets/fashion-mnist.
    """
    root = Path(root or os.environ.get(FASHION_MNIST_ENV) or FASHION_MNIST_DEFAULT_ROOT)
    if not root.is_dir():
        raise DataError(f"Fashion-MNIST folder {root} does not exist; {_HOW_TO_GET}")
    train = _split(root, "train", 0)
    return train, _split(root, "t10k", len(train))
