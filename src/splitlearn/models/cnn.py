"""A small CNN for digits, Fashion-MNIST, CIFAR and their vertically split halves."""

from collections import OrderedDict

from torch import nn

from ._checks import image_size as _image_size
from ._checks import positive_int


def small_cnn(
    *,
    in_channels: int = 1,
    image_size: int | tuple[int, int] = 8,
    num_classes: int = 10,
    width: int = 16,
) -> nn.Sequential:
    """Two 3x3 convs (``width``, ``2 * width`` channels) and a 2x2 max-pool, then a two-layer head.

    ``features``: conv-ReLU-conv-ReLU-maxpool; ``flatten``; ``classifier``:
    Linear(2*width*(H//2)*(W//2), 4*width)-ReLU-Linear(4*width, num_classes).
    ``image_size`` (int or ``(H, W)``, each >= 2) fixes the flatten size, so half images such
    as 8x4 or 28x14 work.
    """
    in_channels = positive_int("in_channels", in_channels)
    h, w = _image_size(image_size, minimum=2)
    num_classes = positive_int("num_classes", num_classes)
    width = positive_int("width", width)
    return nn.Sequential(
        OrderedDict(
            features=nn.Sequential(
                nn.Conv2d(in_channels, width, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(width, 2 * width, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ),
            flatten=nn.Flatten(),
            classifier=nn.Sequential(
                nn.Linear(2 * width * (h // 2) * (w // 2), 4 * width),
                nn.ReLU(),
                nn.Linear(4 * width, num_classes),
            ),
        )
    )
