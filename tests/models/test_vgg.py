import pytest
import torch
from torch import nn

from splitlearn.models import vgg, vgg11, vgg16


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_vgg11_parameter_counts():
    with torch.device("meta"):
        model = vgg11()
    # 3x3 convs, k*k*c_in*c_out + c_out:
    # 3->64: 1,792; 64->128: 73,856; 128->256: 295,168; 256->256: 590,080;
    # 256->512: 1,180,160; 3 x 512->512: 3 x 2,359,808
    assert _count(model.features) == 1_792 + 73_856 + 295_168 + 590_080 + 1_180_160 + 3 * 2_359_808 == 9_220_480
    # 512->512: 262,656 twice; 512->10: 5,130
    assert _count(model.classifier) == 2 * 262_656 + 5_130
    assert _count(model) == 9_750_922


def test_vgg16_parameter_counts():
    with torch.device("meta"):
        model = vgg16(num_classes=100)
    assert _count(model.features) == 14_714_688
    assert _count(model) == 14_714_688 + 2 * 262_656 + 51_300
    assert sum(isinstance(m, nn.Conv2d) for m in model.features) == 13
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.features) == 5


def test_vgg_forward_shapes():
    x = torch.randn(2, 3, 32, 32)
    assert vgg11()(x).shape == (2, 10)
    assert vgg(depth=11, in_channels=1, image_size=(64, 32), num_classes=4)(torch.randn(2, 1, 64, 32)).shape == (2, 4)


def test_vgg_batch_norm_after_each_conv():
    with torch.device("meta"):
        model = vgg16(batch_norm=True)
    kinds = [type(m) for m in model.features]
    assert kinds.count(nn.BatchNorm2d) == 13
    assert all(kinds[i + 1] is nn.BatchNorm2d for i, k in enumerate(kinds) if k is nn.Conv2d)


@pytest.mark.parametrize(
    ("kwargs", "bad"),
    [
        ({"depth": 13}, "depth"),
        ({"depth": 11, "in_channels": 0}, "in_channels"),
        ({"depth": 11, "image_size": 16}, "image_size"),
        ({"depth": 16, "num_classes": 0}, "num_classes"),
    ],
)
def test_vgg_rejects_bad_arguments(kwargs, bad):
    with pytest.raises(ValueError, match=bad):
        vgg(**kwargs)
