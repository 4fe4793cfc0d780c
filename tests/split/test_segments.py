from collections import OrderedDict

import pytest
import torch
from torch import nn

from splitlearn.split import CutError, configs, split_model
from splitlearn.split.segments import check_segments, resolve_cuts


def _model():
    return nn.Sequential(
        OrderedDict(
            features=nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3, padding=1), nn.ReLU()),
            flatten=nn.Flatten(),
            classifier=nn.Sequential(nn.Linear(8 * 4 * 4, 16), nn.ReLU(), nn.Linear(16, 10)),
        )
    )


def test_cut_by_name_index_and_container():
    m = _model()
    assert resolve_cuts(m, "features.2") == [3]
    assert resolve_cuts(m, "features") == [5]
    assert resolve_cuts(m, [3, "classifier.0"]) == [3, 7]
    client, server = split_model(m, "features.2", in_shape=(1, 8, 8))
    x = torch.randn(5, 1, 8, 8)
    torch.testing.assert_close(server(client(x)), m(x), rtol=0, atol=0)
    # Segments share the model's parameters: nothing is copied.
    assert client[0].weight is m.features[0].weight


@pytest.mark.parametrize("cut,message", [
    (0, "out of range"), (9, "out of range"), (-1, "out of range"),
    ("features.40", "names no layer"), ([5, 3], "increasing order"), ([], "no cut"), (1.5, "layer index"),
])
def test_bad_cuts_are_named(cut, message):
    with pytest.raises(CutError, match=message) as err:
        split_model(_model(), cut)
    assert repr(cut)[:5] in str(err.value) or cut == []


def test_shape_mismatch_names_the_cut_and_both_shapes():
    client = nn.Sequential(nn.Flatten(), nn.Linear(64, 12))
    server = nn.Sequential(nn.Linear(10, 3))
    with pytest.raises(CutError) as err:
        check_segments([client, server], (1, 8, 8), cut_names=["1"])
    msg = str(err.value)
    assert "cut '1'" in msg and "(2, 12)" in msg and "(batch, ..., 10)" in msg


def test_model_and_input_mismatch_is_reported():
    with pytest.raises(CutError, match=r"first segment cannot take inputs of shape \(2, 3, 8, 8\)"):
        split_model(_model(), 3, in_shape=(3, 8, 8))


def test_configuration_cut_counts():
    with pytest.raises(CutError, match="exactly one cut"):
        configs.vanilla(_model(), [1, 3])
    with pytest.raises(CutError, match="two cuts"):
        configs.ushaped(_model(), [1])
    with pytest.raises(CutError, match="at least two cuts"):
        configs.multihop(_model(), [1])


def test_vertical_bottoms_that_cannot_merge():
    model = configs.Vertical([nn.Linear(5, 8), nn.Linear(5, 6)], nn.Linear(14, 2), merge="sum")
    with pytest.raises(CutError, match="cannot be merged by sum"):
        configs.vertical(model, in_shape=(10,))
    bad_top = configs.Vertical([nn.Linear(5, 8), nn.Linear(5, 6)], nn.Linear(10, 2))
    with pytest.raises(CutError, match=r"\(2, 14\)"):
        configs.vertical(bad_top, in_shape=(10,))
