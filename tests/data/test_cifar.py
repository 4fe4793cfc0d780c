import re

import numpy as np
import pytest
import torch

from splitlearn.data import DataError, load_cifar10, load_cifar100

from .conftest import CIFAR10_CLASSES, cifar_records


def pixels(ds) -> np.ndarray:
    """Features back to the 3072 record bytes per sample."""
    return (ds.features * 255).round().to(torch.uint8).reshape(len(ds), -1).numpy()


@pytest.mark.parametrize("parent", [False, True])
def test_cifar10_round_trip(cifar10_dir, parent):
    folder, train_records, test_records = cifar10_dir
    train, test = load_cifar10(folder.parent if parent else folder)
    for ds, records, ids in ((train, train_records, range(10)), (test, test_records, range(10, 13))):
        assert (ds.sample_shape, ds.features.dtype, ds.classes, ds.name) == ((3, 32, 32), torch.float32, CIFAR10_CLASSES, "cifar10")
        np.testing.assert_array_equal(pixels(ds), records[:, 1:])
        assert ds.labels.tolist() == records[:, 0].tolist()
        assert ds.sample_ids.tolist() == list(ids)


def test_cifar10_channel_layout(cifar10_dir):
    folder, records, _ = cifar10_dir
    train, _ = load_cifar10(folder)
    red_row_1 = records[0, 1 + 32 : 1 + 64]
    blue_last = records[0, 1 + 2048 + 1023]
    assert (train.features[0, 0, 1] * 255).round().tolist() == red_row_1.tolist()
    assert round(float(train.features[0, 2, 31, 31]) * 255) == blue_last


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (lambda records: records.tobytes()[:-7], "its 6139 bytes are not a positive multiple of the 3073-byte record"),
        (lambda records: bytes(2 * 3074), "its 6148 bytes are not a positive multiple of the 3073-byte record"),
        (lambda records: b"", "its 0 bytes"),
    ],
)
def test_cifar10_wrong_size_is_truncated_or_foreign(cifar10_dir, content, match):
    folder, records, _ = cifar10_dir
    path = folder / "data_batch_3.bin"
    path.write_bytes(content(records[4:6]))
    with pytest.raises(DataError, match=f"{re.escape(str(path))} is truncated or not a CIFAR-10 binary file: {match}"):
        load_cifar10(folder)


def test_cifar10_label_out_of_range(cifar10_dir):
    folder, _, test_records = cifar10_dir
    test_records[1, 0] = 10
    path = folder / "test_batch.bin"
    path.write_bytes(test_records.tobytes())
    with pytest.raises(DataError, match=f"{re.escape(str(path))} is not a CIFAR-10 binary file: record 1 has class label 10, expected 0-9"):
        load_cifar10(folder)


def test_cifar10_missing_batch(cifar10_dir):
    folder, _, _ = cifar10_dir
    (folder / "data_batch_5.bin").unlink()
    with pytest.raises(DataError, match=re.escape(f"cannot read CIFAR-10 file {folder / 'data_batch_5.bin'}")):
        load_cifar10(folder)


def test_cifar10_bad_meta(cifar10_dir):
    folder, _, _ = cifar10_dir
    (folder / "batches.meta.txt").write_text("cat\ndog\n")
    with pytest.raises(DataError, match=f"{re.escape(str(folder / 'batches.meta.txt'))} lists 2 class names, expected 10"):
        load_cifar10(folder)


def test_cifar_missing_folder_names_both_candidates_and_source(tmp_path):
    with pytest.raises(DataError, match=re.escape(f"{tmp_path} or {tmp_path / 'cifar-10-batches-bin'}") + ".*cifar-10-binary.tar.gz"):
        load_cifar10(tmp_path)
    with pytest.raises(DataError, match="cifar-100-binary.tar.gz"):
        load_cifar100(tmp_path / "missing")


@pytest.mark.parametrize(("label", "column", "count"), [("fine", 1, 100), ("coarse", 0, 20)])
def test_cifar100_round_trip(cifar100_dir, label, column, count):
    folder, train_records, test_records = cifar100_dir
    train, test = load_cifar100(folder.parent, label=label)
    for ds, records, ids in ((train, train_records, range(6)), (test, test_records, range(6, 10))):
        assert (ds.sample_shape, ds.num_classes, ds.classes[3], ds.name) == ((3, 32, 32), count, f"{label}3", "cifar100")
        np.testing.assert_array_equal(pixels(ds), records[:, 2:])
        assert ds.labels.tolist() == records[:, column].tolist()
        assert ds.sample_ids.tolist() == list(ids)


def test_cifar100_bad_label_argument(cifar100_dir):
    with pytest.raises(ValueError, match="label must be 'fine' or 'coarse'"):
        load_cifar100(cifar100_dir[0], label="medium")


def test_cifar100_rejects_cifar10_records_and_bad_coarse_label(cifar100_dir):
    folder, train_records, _ = cifar100_dir
    path = folder / "test.bin"
    path.write_bytes(cifar_records(np.random.default_rng(0), 2, (10,)).tobytes())
    with pytest.raises(DataError, match="not a CIFAR-100 binary file: its 6146 bytes .* 3074-byte record"):
        load_cifar100(folder)
    train_records[5, 0] = 20
    (folder / "train.bin").write_bytes(train_records.tobytes())
    with pytest.raises(DataError, match="train.bin is not a CIFAR-100 binary file: record 5 has coarse label 20, expected 0-19"):
        load_cifar100(folder)
