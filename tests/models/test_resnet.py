import pytest
import torch
from torch import nn

from splitlearn.models import resnet, resnet18, resnet50
from splitlearn.models.resnet import BasicBlock, Bottleneck


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_resnet18_structure_and_shape():
    model = resnet18()
    names = list(dict(model.named_children()))
    assert names == ["conv1", "bn1", "relu", "layer1", "layer2", "layer3", "layer4", "avgpool", "flatten", "fc"]
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [2, 2, 2, 2]
    assert all(isinstance(b, BasicBlock) for i in range(1, 5) for b in getattr(model, f"layer{i}"))
    assert model.conv1.kernel_size == (3, 3) and model.conv1.stride == (1, 1)
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert _count(model) == 11_173_962


def test_resnet50_parameter_count():
    with torch.device("meta"):
        model = resnet50(num_classes=100)
    assert [len(getattr(model, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3]
    assert all(isinstance(b, Bottleneck) for i in range(1, 5) for b in getattr(model, f"layer{i}"))
    assert model.fc.in_features == 2048
    # torchvision's ImageNet ResNet-50 has 25,557,032; swap the 7x7 stem (9,408) for a 3x3 one
    # (1,728) and the 1000-class head (2,049,000) for a 100-class one (204,900).
    assert _count(model) == 25_557_032 - 9_408 + 1_728 - 2_049_000 + 204_900 == 23_705_252


@pytest.mark.parametrize("block", [BasicBlock, Bottleneck])
def test_blocks_downsample_and_keep_input(block):
    x = torch.randn(2, 16, 8, 8)
    before = x.clone()
    out = block(16, 8, stride=2).eval()(x)
    assert out.shape == (2, 8 * block.expansion, 4, 4)
    assert torch.equal(x, before)
    assert (out >= 0).all()


def test_resnet_rejects_bad_arguments():
    with pytest.raises(ValueError, match="depth"):
        resnet(depth=34)
    with pytest.raises(ValueError, match="in_channels"):
        resnet(depth=18, in_channels=0)
    with pytest.raises(ValueError, match="num_classes"):
        resnet(depth=50, num_classes=0)
