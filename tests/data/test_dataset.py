import dataclasses

import pytest
import torch

from splitlearn.data import ArrayDataset, DataError


def make(n: int = 4, **overrides) -> ArrayDataset:
    fields = dict(features=torch.rand(n, 2, 3), labels=torch.arange(n) % 2, classes=("a", "b"), name="toy")
    return ArrayDataset(**(fields | overrides))


def test_defaults_and_properties():
    ds = ArrayDataset(torch.zeros(5, 3), torch.tensor([0, 2, 1, 2, 0]))
    assert torch.equal(ds.sample_ids, torch.arange(5))
    assert ds.classes == ("0", "1", "2")
    assert (len(ds), ds.sample_shape, ds.num_classes, ds.name) == (5, (3,), 3, "")


def test_subset_keeps_sample_ids_and_metadata():
    ds = make(6, sample_ids=torch.tensor([10, 11, 12, 13, 14, 15]))
    sub = ds.subset(torch.tensor([4, 1]))
    assert torch.equal(sub.sample_ids, torch.tensor([14, 11]))
    assert torch.equal(sub.features, ds.features[[4, 1]])
    assert torch.equal(sub.labels, ds.labels[[4, 1]])
    assert (sub.classes, sub.name, sub.sample_shape) == (ds.classes, ds.name, (2, 3))
    assert torch.equal(ds.subset(ds.labels == 1).sample_ids, torch.tensor([11, 13, 15]))


def test_classes_list_becomes_tuple_and_dataset_is_frozen():
    ds = make(classes=["a", "b"])
    assert ds.classes == ("a", "b")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ds.name = "other"


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (dict(features=torch.rand(4, 3, dtype=torch.float64)), "features must be float32"),
        (dict(features=torch.rand(4)), r"features must be float32 of shape \(n, \*sample_shape\)"),
        (dict(features=[[0.0]] * 4), "features must be a torch.Tensor"),
        (dict(labels=torch.zeros(4, dtype=torch.int32)), "labels must be int64"),
        (dict(labels=torch.zeros(3, dtype=torch.int64)), r"labels must be int64 of shape \(4,\)"),
        (dict(sample_ids=torch.arange(5)), r"sample_ids must be an int64 tensor of shape \(4,\)"),
        (dict(sample_ids=torch.arange(4, dtype=torch.int32)), "sample_ids must be an int64"),
        (dict(sample_ids=torch.tensor([0, 1, 1, 2])), "sample_ids must be unique"),
        (dict(labels=torch.tensor([0, 1, 2, 0])), r"labels must lie in \[0, 2\)"),
        (dict(labels=torch.tensor([0, -1, 1, 0])), r"labels must lie in \[0, 2\)"),
    ],
)
def test_invalid_fields_raise_value_error(overrides, match):
    with pytest.raises(ValueError, match=match):
        make(**overrides)


def test_subset_with_repeated_index_is_rejected():
    with pytest.raises(ValueError, match="unique"):
        make().subset(torch.tensor([0, 0]))


def test_data_error_is_a_value_error():
    assert issubclass(DataError, ValueError)
