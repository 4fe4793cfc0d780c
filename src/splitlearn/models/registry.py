"""Name registry of model builders keyed by the per-sample input shape."""

import importlib
import json
import math
import os
import sys
from collections.abc import Callable
from functools import partial
from types import MappingProxyType

from torch import nn

from ._checks import positive_int
from .alexnet import alexnet
from .cnn import small_cnn
from .mlp import mlp
from .resnet import resnet
from .vgg import vgg

Builder = Callable[..., nn.Sequential]
"""Called as ``builder(in_shape=..., num_classes=..., **kwargs)``."""

_MODELS: dict[str, Builder] = {}
MODELS: MappingProxyType[str, Builder] = MappingProxyType(_MODELS)
"""Read-only view of the registered builders; add entries with :func:`register_model`."""


def register_model(name: str) -> Callable[[Builder], Builder]:
    """Decorator registering a builder under ``name``; a name can be registered only once."""

    def decorate(builder: Builder) -> Builder:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = builder
        return builder

    return decorate


def build_model(name: str, *, in_shape: tuple[int, ...], num_classes: int, **kwargs) -> nn.Module:
    """Build model ``name`` for per-sample inputs of shape ``in_shape`` (e.g. ``(1, 8, 8)`` or ``(30,)``).

    Image models need ``(C, H, W)``; the mlp takes ``prod(in_shape)`` features. ``kwargs`` go to
    the model function (e.g. ``hidden`` for mlp, ``width`` for small_cnn, ``batch_norm`` for VGG).
    A name ``"package.module:factory"`` (``"monai.networks.nets:DenseNet121"``, or
    ``"mymodels:make_net"`` for a ``mymodels.py`` in the working folder) imports the factory and
    calls it with ``kwargs`` alone: the user's model, with the user's arguments.
    """
    if ":" in name:
        return import_model(name, kwargs)
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS))}, "
                         "or a factory as package.module:name")
    if not isinstance(in_shape, tuple) or not in_shape:
        raise ValueError(f"in_shape must be a non-empty tuple of positive ints, got {in_shape!r}")
    in_shape = tuple(positive_int(f"in_shape[{i}]", d) for i, d in enumerate(in_shape))
    return _MODELS[name](in_shape=in_shape, num_classes=num_classes, **kwargs)


def import_model(spec: str, kwargs: dict | None = None) -> nn.Module:
    """Call the factory ``"package.module:name"`` with ``kwargs``; every failure is one line
    naming the spec (the module that cannot be imported, the missing name, the call that failed)."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"model {spec!r} must be package.module:factory, e.g. monai.networks.nets:DenseNet121")
    cwd = os.getcwd()
    if cwd not in sys.path:  # as `python -m` and uvicorn do: a module file beside the user is found
        sys.path.append(cwd)
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"model {spec!r}: cannot import {module_name!r} ({exc}); is it installed?") from None
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ValueError(f"model {spec!r}: {module_name} has no {attr!r}")
    if not callable(factory):
        raise ValueError(f"model {spec!r}: {attr!r} is not callable")
    try:
        model = factory(**dict(kwargs or {}))
    except Exception as exc:  # the user's factory: report its complaint, not our stack
        text = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ValueError(f"model {spec!r} with arguments {json.dumps(kwargs or {})} failed: {type(exc).__name__}: {text}") from None
    if not isinstance(model, nn.Module):
        raise ValueError(f"model {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _image(name: str, in_shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(in_shape) != 3:
        raise ValueError(f"{name} needs in_shape (C, H, W), got {in_shape!r}")
    return in_shape


@register_model("mlp")
def _mlp(*, in_shape: tuple[int, ...], num_classes: int, **kwargs) -> nn.Sequential:
    return mlp(in_features=math.prod(in_shape), num_classes=num_classes, **kwargs)


@register_model("small_cnn")
def _small_cnn(*, in_shape: tuple[int, ...], num_classes: int, **kwargs) -> nn.Sequential:
    c, h, w = _image("small_cnn", in_shape)
    return small_cnn(in_channels=c, image_size=(h, w), num_classes=num_classes, **kwargs)


@register_model("bottleneck_cnn")
def _bottleneck_cnn(*, in_shape: tuple[int, ...], num_classes: int, **kwargs) -> nn.Sequential:
    """small_cnn with a second conv block, a 1x1 bottleneck to 8 channels ending ``features`` and
    256 hidden units: the model of the NoPeek study, cut after ``features`` (the client sends
    8 x H/4 x W/4 values) and before the last layer."""
    c, h, w = _image("bottleneck_cnn", in_shape)
    options = {"blocks": 2, "bottleneck": 8, "hidden": 256, **kwargs}
    return small_cnn(in_channels=c, image_size=(h, w), num_classes=num_classes, **options)


def _vgg(*, depth: int, in_shape: tuple[int, ...], num_classes: int, **kwargs) -> nn.Sequential:
    c, h, w = _image(f"vgg{depth}", in_shape)
    return vgg(depth=depth, in_channels=c, image_size=(h, w), num_classes=num_classes, **kwargs)


def _resnet(*, depth: int, in_shape: tuple[int, ...], num_classes: int, **kwargs) -> nn.Sequential:
    c, _, _ = _image(f"resnet{depth}", in_shape)
    return resnet(depth=depth, in_channels=c, num_classes=num_classes, **kwargs)


for _depth in (11, 16):
    register_model(f"vgg{_depth}")(partial(_vgg, depth=_depth))
for _depth in (18, 50):
    register_model(f"resnet{_depth}")(partial(_resnet, depth=_depth))


@register_model("alexnet")
def _alexnet(*, in_shape: tuple[int, ...], num_classes: int, **kwargs) -> nn.Sequential:
    c, h, w = _image("alexnet", in_shape)
    if (h, w) != (227, 227):
        raise ValueError(f"alexnet needs 227x227 inputs, got in_shape {in_shape!r}")
    return alexnet(in_channels=c, num_classes=num_classes, **kwargs)
