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
    blocks: int = 1,
    bottleneck: int = 0,
    hidden: int | None = None,
) -> nn.Sequential:
    """Two 3x3 convs (``width``, ``2 * width`` channels) and a 2x2 max-pool, then a two-layer head.

    ``features``: conv-ReLU-conv-ReLU-maxpool; ``flatten``; ``classifier``:
    Linear(2*width*(H//2)*(W//2), hidden)-ReLU-Linear(hidden, num_classes), ``hidden = 4 * width``
    unless given.
    ``image_size`` (int or ``(H, W)``, each >= 2) fixes the flatten size, so half images such
    as 8x4 or 28x14 work.

    ``blocks=2`` appends a second block (3x3 conv with ``2 * width`` channels, ReLU, 2x2
    max-pool; sides >= 4) to ``features``; ``bottleneck=c`` ends ``features`` with a 1x1 conv
    to ``c`` channels (no activation), a narrower output for a cut there. The flatten size
    follows: ``c`` (or ``2 * width``) times ``(H // 2**blocks) * (W // 2**blocks)``.
    """
    in_channels = positive_int("in_channels", in_channels)
    if blocks not in (1, 2) or isinstance(blocks, bool):
        raise ValueError(f"blocks must be 1 or 2, got {blocks!r}")
    h, w = _image_size(image_size, minimum=2**blocks)
    num_classes = positive_int("num_classes", num_classes)
    width = positive_int("width", width)
    hidden = 4 * width if hidden is None else positive_int("hidden", hidden)
    if isinstance(bottleneck, bool) or not isinstance(bottleneck, int) or bottleneck < 0:
        raise ValueError(f"bottleneck must be an int >= 0 (0: no bottleneck), got {bottleneck!r}")
    features: list[nn.Module] = [
        nn.Conv2d(in_channels, width, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
    ]
    if blocks == 2:
        features += [nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
    if bottleneck:
        features.append(nn.Conv2d(2 * width, bottleneck, 1))
    channels = bottleneck or 2 * width
    return nn.Sequential(
        OrderedDict(
            features=nn.Sequential(*features),
            flatten=nn.Flatten(),
            classifier=nn.Sequential(
                nn.Linear(channels * (h // 2**blocks) * (w // 2**blocks), hidden),
                nn.ReLU(),
                nn.Linear(hidden, num_classes),
            ),
        )
    )
