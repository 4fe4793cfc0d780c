"""CIFAR-style VGG."""

from collections import OrderedDict

from torch import nn

from ._checks import image_size as _image_size
from ._checks import positive_int

# Standard VGG configurations: output channels of each 3x3 conv, "M" for a 2x2 max-pool.
_CFGS: dict[int, list[int | str]] = {
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
}


def vgg(
    *,
    depth: int,
    in_channels: int = 3,
    num_classes: int = 10,
    image_size: int | tuple[int, int] = 32,
    batch_norm: bool = False,
) -> nn.Sequential:
    """VGG-``depth`` (11 or 16): ``features`` (3x3 convs, padding 1, ReLU, 5 max-pools), ``flatten``, ``classifier``.

    The classifier is the usual CIFAR head Linear(F, 512)-ReLU-Linear(512, 512)-ReLU-Linear(512,
    num_classes) with F = 512 * (H // 32) * (W // 32), i.e. 512 on 32x32 inputs; no dropout.
    ``batch_norm`` inserts BatchNorm2d after every conv (convs keep their bias).
    """
    if depth not in _CFGS:
        raise ValueError(f"depth must be one of {sorted(_CFGS)}, got {depth!r}")
    channels = positive_int("in_channels", in_channels)
    height, width = _image_size(image_size, minimum=32)
    num_classes = positive_int("num_classes", num_classes)
    features: list[nn.Module] = []
    for v in _CFGS[depth]:
        if v == "M":
            features.append(nn.MaxPool2d(2))
            continue
        features.append(nn.Conv2d(channels, v, 3, padding=1))
        if batch_norm:
            features.append(nn.BatchNorm2d(v))
        features.append(nn.ReLU())
        channels = v
    return nn.Sequential(
        OrderedDict(
            features=nn.Sequential(*features),
            flatten=nn.Flatten(),
            classifier=nn.Sequential(
                nn.Linear(512 * (height // 32) * (width // 32), 512),
                nn.ReLU(),
                nn.Linear(512, 512),
                nn.ReLU(),
                nn.Linear(512, num_classes),
            ),
        )
    )


def vgg11(**kwargs) -> nn.Sequential:
    """``vgg(depth=11, **kwargs)``."""
    return vgg(depth=11, **kwargs)


def vgg16(**kwargs) -> nn.Sequential:
    """``vgg(depth=16, **kwargs)``."""
    return vgg(depth=16, **kwargs)
