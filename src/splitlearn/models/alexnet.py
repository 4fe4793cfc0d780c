"""Single-tower AlexNet on 227x227 inputs and its per-layer parameter table."""

from collections import OrderedDict
from typing import NamedTuple

import torch
from torch import nn

from ._checks import positive_int
from .layers import flatten_layers


class LayerRow(NamedTuple):
    """One row of a parameter table; ``output_size`` is ``"HxWxC"`` or ``"Nx1"``."""

    layer: str
    output_size: str
    weights: int
    biases: int
    parameters: int


# AlexNet without channel groups (one tower), as tabulated in the split learning talk.
ALEXNET_TABLE: tuple[LayerRow, ...] = (
    LayerRow("Input Image", "227x227x3", 0, 0, 0),
    LayerRow("Conv-1", "55x55x96", 34_848, 96, 34_944),
    LayerRow("MaxPool-1", "27x27x96", 0, 0, 0),
    LayerRow("Conv-2", "27x27x256", 614_400, 256, 614_656),
    LayerRow("MaxPool-2", "13x13x256", 0, 0, 0),
    LayerRow("Conv-3", "13x13x384", 884_736, 384, 885_120),
    LayerRow("Conv-4", "13x13x384", 1_327_104, 384, 1_327_488),
    LayerRow("Conv-5", "13x13x256", 884_736, 256, 884_992),
    LayerRow("MaxPool-3", "6x6x256", 0, 0, 0),
    LayerRow("FC-1", "4096x1", 37_748_736, 4096, 37_752_832),
    LayerRow("FC-2", "4096x1", 16_777_216, 4096, 16_781_312),
    LayerRow("FC-3", "1000x1", 4_096_000, 1000, 4_097_000),
    LayerRow("Output", "1000x1", 0, 0, 0),
)


def alexnet(*, in_channels: int = 3, num_classes: int = 1000) -> nn.Sequential:
    """AlexNet for ``in_channels`` x 227 x 227 inputs (62,378,344 parameters with the defaults).

    ``features``: Conv(96, 11x11, stride 4)-ReLU-MaxPool(3, 2)-Conv(256, 5x5, pad 2)-ReLU-MaxPool-
    Conv(384, 3x3)-ReLU-Conv(384, 3x3)-ReLU-Conv(256, 3x3)-ReLU-MaxPool (3x3 convs padded by 1);
    ``flatten``; ``classifier``: Linear(9216, 4096)-ReLU-Linear(4096, 4096)-ReLU-Linear(4096,
    num_classes). Channel groups, local response normalisation and dropout are left out.
    """
    in_channels = positive_int("in_channels", in_channels)
    num_classes = positive_int("num_classes", num_classes)
    return nn.Sequential(
        OrderedDict(
            features=nn.Sequential(
                nn.Conv2d(in_channels, 96, 11, stride=4),
                nn.ReLU(),
                nn.MaxPool2d(3, 2),
                nn.Conv2d(96, 256, 5, padding=2),
                nn.ReLU(),
                nn.MaxPool2d(3, 2),
                nn.Conv2d(256, 384, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(384, 384, 3, padding=1),
                nn.ReLU(),
                nn.Conv2d(384, 256, 3, padding=1),
                nn.ReLU(),
                nn.MaxPool2d(3, 2),
            ),
            flatten=nn.Flatten(),
            classifier=nn.Sequential(
                nn.Linear(256 * 6 * 6, 4096),
                nn.ReLU(),
                nn.Linear(4096, 4096),
                nn.ReLU(),
                nn.Linear(4096, num_classes),
            ),
        )
    )


def _size(x: torch.Tensor) -> str:
    dims = [x.shape[2], x.shape[3], x.shape[1]] if x.dim() == 4 else [x.shape[1], 1]
    return "x".join(map(str, dims))


def alexnet_parameter_table(model: nn.Sequential | None = None, image_size: int = 227) -> list[LayerRow]:
    """Tabulate ``model`` (default: a meta-device ``alexnet()``) like ``ALEXNET_TABLE``.

    Walks the atomic layers while passing one zero image of ``image_size`` x ``image_size``
    through them (on the model's device, so meta models cost nothing). Conv2d, MaxPool2d and
    Linear layers get numbered rows; the first row is the input, the last the output.
    """
    if model is None:
        with torch.device("meta"):
            model = alexnet()
    layers = [layer for _, layer in flatten_layers(model)]
    in_channels = next(m.in_channels for m in layers if isinstance(m, nn.Conv2d))
    device = next(model.parameters()).device
    x = torch.zeros(1, in_channels, image_size, image_size, device=device)
    rows = [LayerRow("Input Image", _size(x), 0, 0, 0)]
    kinds = {nn.Conv2d: "Conv", nn.MaxPool2d: "MaxPool", nn.Linear: "FC"}
    counts = dict.fromkeys(kinds.values(), 0)
    with torch.no_grad():
        for layer in layers:
            x = layer(x)
            kind = kinds.get(type(layer))
            if kind is None:
                continue
            counts[kind] += 1
            weights = layer.weight.numel() if hasattr(layer, "weight") else 0
            biases = layer.bias.numel() if getattr(layer, "bias", None) is not None else 0
            rows.append(LayerRow(f"{kind}-{counts[kind]}", _size(x), weights, biases, weights + biases))
    rows.append(LayerRow("Output", _size(x), 0, 0, 0))
    return rows


def fc_parameter_share(rows: list[LayerRow] | tuple[LayerRow, ...] = ALEXNET_TABLE) -> float:
    """Fraction of all parameters in the ``FC-*`` rows (about 0.94 for AlexNet)."""
    total = sum(row.parameters for row in rows)
    return sum(row.parameters for row in rows if row.layer.startswith("FC-")) / total
