"""Flatten a model into its ordered atomic layers."""

from collections.abc import Iterator

from torch import nn


def flatten_layers(model: nn.Sequential) -> list[tuple[str, nn.Module]]:
    """Return ``(qualified_name, layer)`` for every atomic layer of ``model``, in forward order.

    Nested ``nn.Sequential`` containers are expanded recursively; any other module (a conv,
    an activation, a residual block) is one atomic layer. A layer instance that appears twice
    (one ``ReLU`` used after two convolutions) is listed at each place it runs, so applying the
    layers in order equals ``model(x)``.
    """
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"model must be an nn.Sequential, got {type(model).__name__}")
    return list(_leaves(model, ""))


def _leaves(module: nn.Sequential, prefix: str) -> Iterator[tuple[str, nn.Module]]:
    # Not named_children(): it skips a module instance it has already seen, and Sequential.forward
    # runs every entry, repeated or not.
    for name, child in module._modules.items():
        if child is None:
            continue
        if isinstance(child, nn.Sequential):
            yield from _leaves(child, f"{prefix}{name}.")
        else:
            yield f"{prefix}{name}", child
