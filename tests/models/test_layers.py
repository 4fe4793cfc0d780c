import pytest
import torch
from torch import nn

from splitlearn.models import build_model, flatten_layers
from splitlearn.models.resnet import BasicBlock

ZOO = [
    ("mlp", (30,), {}),
    ("small_cnn", (1, 8, 8), {}),
    ("small_cnn", (3, 32, 16), {}),
    ("vgg11", (3, 32, 32), {"batch_norm": True}),
    ("vgg16", (3, 32, 32), {}),
    ("resnet18", (3, 8, 8), {}),
    ("resnet50", (3, 8, 8), {}),
    ("alexnet", (3, 227, 227), {}),
]


def test_flatten_layers_names_and_order():
    inner = nn.Sequential(nn.Linear(2, 3), nn.Sequential(nn.ReLU(), nn.Linear(3, 1)))
    block = BasicBlock(4, 4)
    model = nn.Sequential(nn.Flatten(), inner, block)
    names = [name for name, _ in flatten_layers(model)]
    assert names == ["0", "1.0", "1.1.0", "1.1.1", "2"]
    assert flatten_layers(model)[-1][1] is block  # non-Sequential modules are atomic


def test_flatten_layers_rejects_non_sequential():
    with pytest.raises(TypeError, match="nn.Sequential"):
        flatten_layers(nn.Linear(2, 2))


@pytest.mark.parametrize(("name", "in_shape", "kwargs"), ZOO, ids=[f"{n}-{s}" for n, s, _ in ZOO])
def test_flattened_model_matches_model(name, in_shape, kwargs):
    torch.manual_seed(0)
    model = build_model(name, in_shape=in_shape, num_classes=7, **kwargs).eval()
    layers = flatten_layers(model)
    assert all(not isinstance(layer, nn.Sequential) for _, layer in layers)
    assert all(not getattr(layer, "inplace", False) for layer in model.modules())
    named = dict(model.named_modules())
    assert all(named[qualified] is layer for qualified, layer in layers)
    x = torch.randn(1 if name == "alexnet" else 2, *in_shape)
    with torch.no_grad():
        expected = model(x)
        assert expected.shape == (x.shape[0], 7)
        assert torch.equal(nn.Sequential(*[layer for _, layer in layers])(x), expected)
