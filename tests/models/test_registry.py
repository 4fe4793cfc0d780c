import pytest
import torch
from torch import nn

from splitlearn.models import MODELS, build_model, register_model, registry


def test_builtin_names():
    assert set(MODELS) == {"mlp", "small_cnn", "bottleneck_cnn", "vgg11", "vgg16", "resnet18", "resnet50", "alexnet"}


@pytest.mark.parametrize(
    ("name", "in_shape"),
    [
        ("mlp", (30,)),
        ("mlp", (1, 8, 4)),
        ("small_cnn", (1, 28, 14)),
        ("bottleneck_cnn", (1, 28, 28)),
        ("vgg11", (3, 32, 32)),
        ("vgg16", (1, 32, 32)),
        ("resnet18", (3, 16, 16)),
        ("resnet50", (3, 16, 16)),
        ("alexnet", (3, 227, 227)),
    ],
)
def test_build_model_matches_shape(name, in_shape):
    with torch.device("meta"):
        model = build_model(name, in_shape=in_shape, num_classes=5)
        assert isinstance(model, nn.Sequential)
        assert model(torch.zeros(2, *in_shape)).shape == (2, 5)


def test_build_model_passes_kwargs():
    model = build_model("mlp", in_shape=(2, 3), num_classes=2, hidden=(4, 4))
    assert model.fc1.in_features == 6 and model.fc3.out_features == 2
    with torch.device("meta"):
        assert isinstance(build_model("vgg11", in_shape=(3, 32, 32), num_classes=2, batch_norm=True).features[1], nn.BatchNorm2d)


def test_unknown_name_lists_known_models():
    with pytest.raises(ValueError, match="unknown model 'lenet'.*alexnet, bottleneck_cnn, mlp, resnet18"):
        build_model("lenet", in_shape=(1, 8, 8), num_classes=10)


@pytest.mark.parametrize(
    ("name", "in_shape", "bad"),
    [
        ("mlp", (), "in_shape"),
        ("mlp", [30], "in_shape"),
        ("mlp", (30, 0), r"in_shape\[1\]"),
        ("small_cnn", (8, 8), r"small_cnn needs in_shape \(C, H, W\)"),
        ("vgg11", (3, 16, 16), "image_size"),
        ("alexnet", (3, 224, 224), "227x227"),
    ],
)
def test_bad_in_shape(name, in_shape, bad):
    with pytest.raises(ValueError, match=bad):
        build_model(name, in_shape=in_shape, num_classes=10)


def test_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        build_model("resnet18", in_shape=(3, 8, 8), num_classes=0)


def test_register_model_refuses_duplicates():
    with pytest.raises(ValueError, match="'mlp' is already registered"):
        register_model("mlp")(lambda **kwargs: nn.Sequential())
    assert MODELS["mlp"] is registry._mlp
    with pytest.raises(TypeError):
        MODELS["other"] = MODELS["mlp"]  # read-only view


def test_register_model_adds_builder():
    name = "test_registry_identity"

    @register_model(name)
    def build(*, in_shape, num_classes):
        return nn.Sequential(nn.Flatten(), nn.Linear(in_shape[0], num_classes))

    try:
        assert build_model(name, in_shape=(3,), num_classes=2)(torch.zeros(1, 3)).shape == (1, 2)
    finally:
        del registry._MODELS[name]
