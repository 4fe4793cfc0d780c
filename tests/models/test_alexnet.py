import pytest
import torch
from torch import nn

from splitlearn.models import ALEXNET_TABLE, alexnet, alexnet_parameter_table, fc_parameter_share


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return alexnet()


def test_table_totals():
    assert all(row.weights + row.biases == row.parameters for row in ALEXNET_TABLE)
    assert sum(row.parameters for row in ALEXNET_TABLE) == 62_378_344
    assert fc_parameter_share() == pytest.approx(58_631_144 / 62_378_344)
    assert round(fc_parameter_share(), 2) == 0.94


def test_table_computed_from_meta_model():
    assert alexnet_parameter_table() == list(ALEXNET_TABLE)


def test_table_computed_from_real_model(model):
    rows = alexnet_parameter_table(model)
    assert rows == list(ALEXNET_TABLE)
    assert sum(p.numel() for p in model.parameters()) == 62_378_344
    assert fc_parameter_share(rows) == fc_parameter_share()


def test_alexnet_forward_and_names(model):
    assert model(torch.randn(1, 3, 227, 227)).shape == (1, 1000)
    assert isinstance(model.get_submodule("features.0"), nn.Conv2d)
    assert isinstance(model.get_submodule("classifier.4"), nn.Linear)


def test_alexnet_variants():
    with torch.device("meta"):
        model = alexnet(in_channels=1, num_classes=10)
    rows = alexnet_parameter_table(model)
    assert rows[0].output_size == "227x227x1"
    assert rows[1].weights == 11 * 11 * 1 * 96
    assert rows[-1].output_size == "10x1"
    with pytest.raises(ValueError, match="num_classes"):
        alexnet(num_classes=0)
    with pytest.raises(ValueError, match="in_channels"):
        alexnet(in_channels=-3)
