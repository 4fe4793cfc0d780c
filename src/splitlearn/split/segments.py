"""Cutting an ordinary ``nn.Sequential`` model into segments, with shape checks at build time."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from splitlearn.models.layers import flatten_layers

__all__ = ["CutError", "check_segments", "resolve_cuts", "split_model"]


class CutError(ValueError):
    """A cut does not name a valid place in the model, or segments do not fit together."""


def resolve_cuts(model: nn.Module, cut: int | str | Sequence[int | str]) -> list[int]:
    """Turn cuts into boundaries in the model's flattened layer list.

    An integer ``k`` keeps the first ``k`` layers before the cut. A name (``"features.4"``, or a
    container such as ``"layer2"``) cuts right after that layer, which becomes the cut layer.

    >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> resolve_cuts(m, 2), resolve_cuts(m, ["0"])
    ([2], [1])
    """
    layers = flatten_layers(model)
    names = [name for name, _ in layers]
    cuts = list(cut) if isinstance(cut, (list, tuple)) else [cut]
    if not cuts:
        raise CutError("no cut given: name at least one layer or index to cut after")
    bounds = []
    for c in cuts:
        if isinstance(c, bool) or not isinstance(c, (int, str)):
            raise CutError(f"cut {c!r} must be a layer index (int) or a layer name (str)")
        if isinstance(c, int):
            b = c
        else:
            matches = [i for i, n in enumerate(names) if n == c or n.startswith(c + ".")]
            if not matches:
                raise CutError(f"cut {c!r} names no layer; layers are: {', '.join(names)}")
            b = matches[-1] + 1
        if not 0 < b < len(names):
            raise CutError(
                f"cut {c!r} is out of range: the model has {len(names)} layers, so a cut must keep "
                f"between 1 and {len(names) - 1} layers before it"
            )
        bounds.append(b)
    if bounds != sorted(set(bounds)):
        raise CutError(f"cuts {cuts} must be distinct and in increasing order (boundaries {bounds})")
    return bounds


def split_model(
    model: nn.Module,
    cut: int | str | Sequence[int | str],
    *,
    in_shape: Sequence[int] | None = None,
) -> list[nn.Sequential]:
    """Cut ``model`` into ``len(cuts) + 1`` segments that share its parameters.

    With ``in_shape`` (one sample's shape) the segments are run on a probe batch and a mismatch
    is reported naming the cut and both shapes.
    """
    layers = flatten_layers(model)
    bounds = [0, *resolve_cuts(model, cut), len(layers)]
    segments = [
        nn.Sequential(OrderedDict((n.replace(".", "_"), m) for n, m in layers[a:b]))
        for a, b in zip(bounds, bounds[1:])
    ]
    if in_shape is not None:
        check_segments(segments, in_shape, cut_names=[layers[b - 1][0] for b in bounds[1:-1]])
    return segments


def _expects(layer: nn.Module) -> str:
    if isinstance(layer, nn.Linear):
        return f"(batch, ..., {layer.in_features})"
    if isinstance(layer, nn.modules.conv._ConvNd):
        return f"(batch, {layer.in_channels}, ...)"
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        return f"(batch, {layer.num_features}, ...)"
    return f"what {type(layer).__name__} takes"


def _first_layer(module: nn.Module) -> nn.Module:
    layers = flatten_layers(module) if isinstance(module, nn.Sequential) else []
    return layers[0][1] if layers else module


def check_segments(
    segments: Sequence[nn.Module],
    in_shape: Sequence[int],
    *,
    cut_names: Sequence[str] | None = None,
) -> list[torch.Size]:
    """Run a probe batch of 2 through the segments in order; return each segment's output shape.

    Raises ``CutError`` naming the cut, the shape produced before it and the shape expected after.
    """
    cut_names = list(cut_names or [f"#{i + 1}" for i in range(len(segments) - 1)])
    first = next((p for s in segments for p in s.parameters()), None)
    x = torch.zeros(2, *in_shape, device=first.device if first is not None else "cpu")
    shapes = []
    modes = [s.training for s in segments]
    try:
        with torch.no_grad():
            for i, seg in enumerate(segments):
                seg.eval()
                try:
                    x = seg(x)
                except RuntimeError as exc:
                    if i == 0:
                        raise CutError(
                            f"the first segment cannot take inputs of shape {tuple(x.shape)} "
                            f"(sample shape {tuple(in_shape)}): {exc}"
                        ) from None
                    layer = _first_layer(seg)
                    raise CutError(
                        f"segments do not fit at cut {cut_names[i - 1]!r}: the segment before it "
                        f"produces shape {tuple(x.shape)}, but the segment after it starts with "
                        f"{layer} and expects {_expects(layer)}"
                    ) from None
                shapes.append(x.shape)
    finally:
        for seg, mode in zip(segments, modes):
            seg.train(mode)
    return shapes
