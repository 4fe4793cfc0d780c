import numpy as np
import pytest
import sklearn.datasets
import torch

from splitlearn.data import load_breast_cancer, load_digits


def test_digits_shapes_values_and_ids():
    train, test = load_digits()
    images = sklearn.datasets.load_digits().images
    assert (len(train), len(test)) == (1438, 359)
    assert (train.sample_shape, train.num_classes, train.classes[3], train.name) == ((1, 8, 8), 10, "3", "digits")
    for ds in (train, test):
        assert ds.features.dtype == torch.float32 and ds.labels.dtype == torch.int64
        assert 0 <= ds.features.min() and ds.features.max() <= 1
        np.testing.assert_allclose(ds.features[:, 0].numpy(), images[ds.sample_ids.numpy()] / 16, rtol=1e-6)
    ids = torch.cat([train.sample_ids, test.sample_ids])
    assert torch.equal(ids.sort().values, torch.arange(1797))


def test_digits_split_is_stratified_and_seeded():
    train, test = load_digits(test_fraction=0.25, seed=3)
    per_class = torch.cat([train.labels, test.labels]).bincount()
    assert torch.equal(test.labels.bincount(), (per_class * 0.25).round().long())
    assert torch.equal(load_digits(test_fraction=0.25, seed=3)[1].sample_ids, test.sample_ids)
    assert not torch.equal(load_digits(test_fraction=0.25, seed=4)[1].sample_ids, test.sample_ids)


def test_breast_cancer_is_standardised_with_train_statistics_only():
    train, test = load_breast_cancer(seed=1)
    raw = torch.from_numpy(sklearn.datasets.load_breast_cancer().data)
    assert (train.sample_shape, test.sample_shape, train.classes) == ((30,), (30,), ("malignant", "benign"))
    assert len(set(train.sample_ids.tolist()) | set(test.sample_ids.tolist())) == len(raw) == len(train) + len(test)
    torch.testing.assert_close(train.features.mean(0), torch.zeros(30), atol=1e-5, rtol=0)
    torch.testing.assert_close(train.features.std(0), torch.ones(30), atol=1e-5, rtol=0)
    raw_train, raw_test = raw[train.sample_ids], raw[test.sample_ids]
    expected = ((raw_test - raw_train.mean(0)) / raw_train.std(0)).float()
    torch.testing.assert_close(test.features, expected, atol=1e-4, rtol=1e-4)
    leaked = ((raw_test - raw.mean(0)) / raw.std(0)).float()
    assert not torch.allclose(test.features, leaked, atol=1e-3)


@pytest.mark.parametrize("fraction", [0, 1, -0.1, 1.5])
def test_bad_test_fraction(fraction):
    with pytest.raises(ValueError, match="test_fraction"):
        load_digits(test_fraction=fraction)
