import gzip
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from splitlearn.data import DataError, load_fashion_mnist
from splitlearn.data.idx import FASHION_MNIST_CLASSES, FASHION_MNIST_DEFAULT_ROOT, read_idx, write_idx


@pytest.mark.parametrize("suffix", ["", ".gz"])
@pytest.mark.parametrize(
    ("dtype", "shape"),
    [(np.uint8, (3, 5, 4)), (np.int8, (7,)), (np.int16, (2, 3)), (np.int32, (4, 1)), (np.float32, (2, 2, 2, 2)),
     (np.float64, (3,))],
)  # fmt: skip
def test_round_trip(tmp_path, suffix, dtype, shape):
    array = (np.random.default_rng(0).standard_normal(shape) * 100).astype(dtype)
    path = write_idx(tmp_path / f"a{suffix}", array)
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".gz")
    back = read_idx(path)
    assert back.dtype == dtype and back.dtype.isnative
    np.testing.assert_array_equal(back, array)


def test_header_layout(tmp_path):
    data = write_idx(tmp_path / "a", np.arange(6, dtype=np.uint8).reshape(2, 3)).read_bytes()
    assert data == bytes([0, 0, 8, 2, 0, 0, 0, 2, 0, 0, 0, 3, 0, 1, 2, 3, 4, 5])


def test_write_rejects_unsupported_dtype(tmp_path):
    with pytest.raises(ValueError, match="int64"):
        write_idx(tmp_path / "a", np.zeros(3, np.int64))


@pytest.mark.parametrize("compress", [False, True])
def test_truncated_file_names_file_and_byte_counts(tmp_path, compress):
    data = write_idx(tmp_path / "full", np.zeros((6, 28, 28), np.uint8)).read_bytes()[:1250]
    path = tmp_path / ("train-images-idx3-ubyte.gz" if compress else "train-images-idx3-ubyte")
    path.write_bytes(gzip.compress(data) if compress else data)
    message = f"{path} is truncated: header says 6 items of 28x28 uint8 = 4704 bytes, file has 1234 after the 16-byte header"
    with pytest.raises(DataError, match=re.escape(message)):
        read_idx(path)


def test_trailing_bytes(tmp_path):
    path = tmp_path / "labels"
    path.write_bytes(write_idx(path, np.zeros(5, np.uint8)).read_bytes() + b"\0")
    with pytest.raises(DataError, match=re.escape(f"{path} has trailing bytes: header says 5 items uint8 = 5 bytes, file has 6")):
        read_idx(path)


def test_truncated_header(tmp_path):
    path = tmp_path / "short"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 1]))
    with pytest.raises(DataError, match=f"{re.escape(str(path))} is truncated: its 3-dimension header needs 16 bytes, file has 8"):
        read_idx(path)


@pytest.mark.parametrize(
    "content",
    [b"\x89PNG\r\n\x1a\n" + bytes(40), b"hello, world\n", b"\0\0", bytes([0, 0, 0x0A, 1, 0, 0, 0, 1, 7]),
     bytes([0, 0, 8, 0]), gzip.compress(b"some text, gzipped")],
)  # fmt: skip
def test_foreign_file_is_not_idx(tmp_path, content):
    path = tmp_path / "foreign.bin"
    path.write_bytes(content)
    with pytest.raises(DataError, match=f"{re.escape(str(path))} is not an IDX file"):
        read_idx(path)


def test_corrupt_gzip(tmp_path):
    path = tmp_path / "broken.gz"
    path.write_bytes(gzip.compress(bytes(1000))[:20])
    with pytest.raises(DataError, match=f"{re.escape(str(path))} is a corrupt or truncated gzip file"):
        read_idx(path)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"cannot read IDX file {tmp_path / 'nope'}")):
        read_idx(tmp_path / "nope")


def test_fashion_mnist_round_trip(fmnist_dir):
    root, arrays = fmnist_dir
    train, test = load_fashion_mnist(root)
    for ds, prefix, ids in ((train, "train", range(6)), (test, "t10k", range(6, 10))):
        assert ds.features.dtype == torch.float32 and ds.sample_shape == (1, 28, 28)
        assert torch.equal((ds.features[:, 0] * 255).round().to(torch.uint8), torch.from_numpy(arrays[f"{prefix}-images-idx3-ubyte"]))
        assert ds.labels.tolist() == arrays[f"{prefix}-labels-idx1-ubyte"].tolist()
        assert ds.sample_ids.tolist() == list(ids)
        assert (ds.classes, ds.name) == (FASHION_MNIST_CLASSES, "fashion_mnist")


def test_fashion_mnist_reads_raw_files_and_env_default(fmnist_dir, monkeypatch):
    root, arrays = fmnist_dir
    for stem, array in arrays.items():
        (root / f"{stem}.gz").unlink()
        write_idx(root / stem, array)
    monkeypatch.setenv("SPLITLEARN_FASHION_MNIST", str(root))
    assert torch.equal(load_fashion_mnist()[1].labels, torch.tensor([5, 2, 9, 0]))


def test_fashion_mnist_missing_folder_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match=f"{re.escape(str(tmp_path / 'none'))} does not exist.*apt-get install dataset-fashion-mnist.*--data-root"):
        load_fashion_mnist(tmp_path / "none")


def test_fashion_mnist_missing_file(fmnist_dir):
    root, _ = fmnist_dir
    (root / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match=f"{re.escape(str(root / 't10k-labels-idx1-ubyte'))}.*not found.*apt-get"):
        load_fashion_mnist(root)


@pytest.mark.parametrize(
    ("stem", "array", "match"),
    [
        ("train-labels-idx1-ubyte", np.zeros(5, np.uint8), "expected 6 uint8 labels"),
        ("train-labels-idx1-ubyte", np.array([0, 1, 2, 3, 4, 10], np.uint8), "has label 10"),
        ("t10k-images-idx3-ubyte", np.zeros((4, 27, 28), np.uint8), r"expected uint8 \(n, 28, 28\) images"),
        ("t10k-images-idx3-ubyte", np.zeros((4, 28, 28), np.float32), r"expected uint8 \(n, 28, 28\) images"),
    ],
)
def test_fashion_mnist_inconsistent_files(fmnist_dir, stem, array, match):
    root, _ = fmnist_dir
    path = write_idx(root / f"{stem}.gz", array)
    with pytest.raises(DataError, match=f"{re.escape(str(path))}.*{match}"):
        load_fashion_mnist(root)


@pytest.mark.fmnist
def test_real_fashion_mnist():
    root = Path(FASHION_MNIST_DEFAULT_ROOT)
    if not root.is_dir():
        pytest.skip(f"{root} absent (apt-get install dataset-fashion-mnist)")
    train, test = load_fashion_mnist(root)
    assert (len(train), len(test), train.sample_shape, test.sample_shape) == (60000, 10000, (1, 28, 28), (1, 28, 28))
    assert torch.equal(train.labels.bincount(), torch.full((10,), 6000))
    assert torch.equal(test.labels.bincount(), torch.full((10,), 1000))
    assert 0 <= train.features.min() and train.features.max() == 1
