"""CIFAR-style ResNet; each residual block is one atomic layer."""

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

from ._checks import positive_int


def _shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module:
    if stride == 1 and in_planes == out_planes:
        return nn.Identity()
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride, bias=False), nn.BatchNorm2d(out_planes))


class BasicBlock(nn.Module):
    """Two 3x3 conv-BN layers plus a (projection when needed) shortcut, then ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = _shortcut(in_planes, planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3 (carries the stride), 1x1 expand by 4, each with BN, plus shortcut, then ReLU."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        out_planes = planes * self.expansion
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_planes)
        self.shortcut = _shortcut(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.shortcut(x))


_SPECS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    50: (Bottleneck, (3, 4, 6, 3)),
}


def resnet(*, depth: int, in_channels: int = 3, num_classes: int = 10) -> nn.Sequential:
    """ResNet-``depth`` (18 or 50) for small images: 3x3 stride-1 stem, no max-pool.

    Children: ``conv1, bn1, relu, layer1..layer4`` (64/128/256/512 planes, strides 1/2/2/2,
    each an ``nn.Sequential`` of blocks), ``avgpool`` (AdaptiveAvgPool2d(1)), ``flatten``, ``fc``.
    Any input size works thanks to the adaptive pooling.
    """
    if depth not in _SPECS:
        raise ValueError(f"depth must be one of {sorted(_SPECS)}, got {depth!r}")
    in_channels = positive_int("in_channels", in_channels)
    num_classes = positive_int("num_classes", num_classes)
    block, counts = _SPECS[depth]
    stages: list[tuple[str, nn.Module]] = []
    in_planes = 64
    for i, (planes, count) in enumerate(zip((64, 128, 256, 512), counts), start=1):
        blocks = []
        for stride in [1 if i == 1 else 2] + [1] * (count - 1):
            blocks.append(block(in_planes, planes, stride))
            in_planes = planes * block.expansion
        stages.append((f"layer{i}", nn.Sequential(*blocks)))
    return nn.Sequential(
        OrderedDict(
            [
                ("conv1", nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)),
                ("bn1", nn.BatchNorm2d(64)),
                ("relu", nn.ReLU()),
                *stages,
                ("avgpool", nn.AdaptiveAvgPool2d(1)),
                ("flatten", nn.Flatten()),
                ("fc", nn.Linear(in_planes, num_classes)),
            ]
        )
    )


def resnet18(**kwargs) -> nn.Sequential:
    """``resnet(depth=18, **kwargs)``."""
    return resnet(depth=18, **kwargs)


def resnet50(**kwargs) -> nn.Sequential:
    """``resnet(depth=50, **kwargs)``."""
    return resnet(depth=50, **kwargs)
