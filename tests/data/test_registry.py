import pytest
import torch

from splitlearn.data import DATASETS, DataError, load_dataset, load_digits


def test_known_names():
    assert set(DATASETS) == {"digits", "breast_cancer", "fashion_mnist", "cifar10", "cifar100", "histology", "csv", "imagefolder"}


def test_unknown_name_lists_known_ones():
    with pytest.raises(ValueError, match="unknown data set 'mnist'; known: digits, breast_cancer, fashion_mnist"):
        load_dataset("mnist")


@pytest.mark.parametrize(("name", "source"), [("cifar10", "cifar-10-binary"), ("cifar100", "cifar-100-binary"), ("histology", "zenodo")])
def test_file_data_sets_need_a_root(name, source):
    with pytest.raises(DataError, match=f"data set '{name}' is read from files: pass root .*{source}"):
        load_dataset(name)


def test_bundled_sets_take_seed_and_options():
    train, test = load_dataset("digits", seed=7, test_fraction=0.5)
    expected = load_digits(seed=7, test_fraction=0.5)[1]
    assert torch.equal(test.sample_ids, expected.sample_ids)
    assert load_dataset("breast_cancer")[0].sample_shape == (30,)


def test_file_sets_through_registry(cifar10_dir, cifar100_dir, fmnist_dir, tiles_dir):
    assert len(load_dataset("cifar10", root=cifar10_dir[0].parent)[0]) == 10
    assert load_dataset("cifar100", root=cifar100_dir[0], label="coarse")[0].num_classes == 20
    assert len(load_dataset("fashion_mnist", root=fmnist_dir[0])[1]) == 4
    train, test = load_dataset("histology", root=tiles_dir[0], seed=3, image_size=8)
    assert (train.name, train.sample_shape, len(test)) == ("histology", (3, 8, 8), 3)
