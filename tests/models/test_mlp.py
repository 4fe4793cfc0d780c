import pytest
import torch
from torch import nn

from splitlearn.models import mlp


def test_mlp_layers_and_shape():
    model = mlp(in_features=12, hidden=(8, 5), num_classes=3)
    assert list(dict(model.named_children())) == ["flatten", "fc1", "relu1", "fc2", "relu2", "fc3"]
    assert [m.out_features for m in model if isinstance(m, nn.Linear)] == [8, 5, 3]
    assert model(torch.randn(4, 3, 4)).shape == (4, 3)  # flattens 3x4 samples
    # (12*8 + 8) + (8*5 + 5) + (5*3 + 3)
    assert sum(p.numel() for p in model.parameters()) == 104 + 45 + 18


def test_mlp_without_hidden_layers_is_linear():
    model = mlp(in_features=4, hidden=(), num_classes=2)
    assert [type(m) for m in model] == [nn.Flatten, nn.Linear]


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"in_features": 0, "num_classes": 2}, "in_features"),
        ({"in_features": 4, "num_classes": -1}, "num_classes"),
        ({"in_features": 4, "num_classes": 2, "hidden": (8, 0)}, r"hidden\[1\]"),
        ({"in_features": 4, "num_classes": 2, "hidden": 8}, "hidden"),
        ({"in_features": 4.0, "num_classes": 2}, "in_features"),
        ({"in_features": True, "num_classes": 2}, "in_features"),
    ],
)
def test_mlp_rejects_bad_arguments(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        mlp(**kwargs)
