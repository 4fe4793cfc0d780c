"""Multi-layer perceptron."""

from collections import OrderedDict
from collections.abc import Sequence

from torch import nn

from ._checks import positive_int


def mlp(*, in_features: int, hidden: Sequence[int] = (64,), num_classes: int) -> nn.Sequential:
    """Flatten, then ``Linear -> ReLU`` per hidden width, then a ``Linear`` to ``num_classes``.

    Children are named ``flatten, fc1, relu1, ..., fc{len(hidden) + 1}``.
    """
    if not isinstance(hidden, Sequence):
        raise ValueError(f"hidden must be a sequence of positive ints, got {hidden!r}")
    widths = [positive_int("in_features", in_features)]
    widths += [positive_int(f"hidden[{i}]", h) for i, h in enumerate(hidden)]
    widths.append(positive_int("num_classes", num_classes))
    layers: list[tuple[str, nn.Module]] = [("flatten", nn.Flatten())]
    for i, (n_in, n_out) in enumerate(zip(widths, widths[1:]), start=1):
        layers.append((f"fc{i}", nn.Linear(n_in, n_out)))
        if i < len(widths) - 1:
            layers.append((f"relu{i}", nn.ReLU()))
    return nn.Sequential(OrderedDict(layers))
