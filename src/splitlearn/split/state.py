"""Optimisers per party, and packing a party's segments plus optimiser state into plain tensors.

Packed state is ``dict[str, Tensor]`` plus JSON-compatible metadata, so it can be written with
safetensors or put on the wire without pickle.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from splitlearn._text import capped

__all__ = ["OptimizerSpec", "pack_state", "unpack_state"]

_OPTIMIZERS = {"sgd": torch.optim.SGD, "adam": torch.optim.Adam, "adamw": torch.optim.AdamW}


@dataclass(frozen=True)
class OptimizerSpec:
    """Which optimiser every party builds over its own parameters."""

    name: str = "sgd"
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.name not in _OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.name!r}; known: {', '.join(_OPTIMIZERS)}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.momentum < 0 or self.weight_decay < 0:
            raise ValueError("momentum and weight_decay must be >= 0")

    def build(self, params: Iterable[nn.Parameter]) -> torch.optim.Optimizer:
        params = list(params)
        if self.name == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay)
        return _OPTIMIZERS[self.name](params, lr=self.lr, weight_decay=self.weight_decay)


def pack_state(
    modules: Mapping[str, nn.Module], optimizer: torch.optim.Optimizer | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Segments' state dicts and optimiser state as (tensors, JSON metadata)."""
    tensors = {f"model/{node}/{k}": v.detach() for node, m in modules.items() for k, v in m.state_dict().items()}
    meta: dict[str, Any] = {"nodes": sorted(modules)}
    if optimizer is not None:
        sd = optimizer.state_dict()
        scalars = {}
        for idx, entry in sd["state"].items():
            for k, v in entry.items():
                if isinstance(v, torch.Tensor):
                    tensors[f"optim/{idx}/{k}"] = v
                else:
                    scalars[f"{idx}/{k}"] = v
        meta["optim"] = {"param_groups": sd["param_groups"], "scalars": scalars}
    # Round-trip through JSON so anything that could not cross a wire fails here, not later.
    return tensors, json.loads(json.dumps(meta))


def _describe(t: torch.Tensor) -> str:
    return f"{str(t.dtype).removeprefix('torch.')}{list(t.shape)}"


def _check_groups(given: Any, current: list[dict[str, Any]]) -> None:
    """Refuse optimiser ``param_groups`` that are not the present ones' structure: the same
    groups over the same parameters, each setting of the same type."""
    if not isinstance(given, list) or len(given) != len(current):
        raise ValueError(f"optimiser state has {len(given) if isinstance(given, list) else 'no'} parameter groups, "
                         f"this optimiser {len(current)}")
    for i, (g, c) in enumerate(zip(given, current)):
        if not isinstance(g, dict) or set(g) != set(c) or g["params"] != c["params"]:
            raise ValueError(f"optimiser parameter group {i} does not match this optimiser's (other settings or parameters)")
        for key, value in c.items():
            v = g[key]
            same = (type(v) is type(value) or (isinstance(value, float) and type(v) is int)
                    or (isinstance(value, tuple) and isinstance(v, list) and len(v) == len(value)))
            if not same or (isinstance(v, float) and not math.isfinite(v)):
                raise ValueError(f"optimiser parameter group {i}: setting {key!r} is {capped(repr(v), 80)}, "
                                 f"expected a {type(value).__name__}")


def unpack_state(
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    modules: Mapping[str, nn.Module],
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Load what :func:`pack_state` produced into freshly built modules and optimiser. State read
    from disk or a wire may be anything: ``ValueError`` naming the entry unless every tensor has a
    place, shape and dtype in these modules and this optimiser, and every setting its type."""
    if not isinstance(meta, Mapping) or meta.get("nodes") != sorted(modules):
        nodes = meta.get("nodes") if isinstance(meta, Mapping) else None
        raise ValueError(f"state is for nodes {capped(repr(nodes), 200)}, but this party holds {sorted(modules)}")
    expected = {f"model/{node}/{k}": v for node, m in modules.items() for k, v in m.state_dict().items()}
    params = [p for g in optimizer.param_groups for p in g["params"]] if optimizer is not None else []
    optim: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key in expected:
            if v.shape != expected[key].shape or v.dtype != expected[key].dtype:
                raise ValueError(f"tensor {key!r} is {_describe(v)}, the segment's is {_describe(expected[key])}")
            continue
        idx, _, name = key.removeprefix("optim/").partition("/")
        if not (key.startswith("optim/") and idx.isdigit() and int(idx) < len(params) and name):
            raise ValueError(f"tensor {capped(key, 200)!r} belongs to none of this party's segments or optimiser state")
        if not v.is_floating_point() or (v.dim() and v.shape != params[int(idx)].shape):
            raise ValueError(f"optimiser tensor {key!r} is {_describe(v)}; its parameter is {_describe(params[int(idx)])}")
        optim.setdefault(int(idx), {})[name] = v.clone()  # the optimiser updates these in place
    missing = sorted(set(expected) - set(tensors))
    if missing:
        raise ValueError(f"state lacks {len(missing)} of the segments' tensors, e.g. {missing[0]!r}")
    for node, m in modules.items():
        prefix = f"model/{node}/"
        m.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    if optimizer is None:
        return
    saved = meta.get("optim")
    if not isinstance(saved, Mapping) or not isinstance(saved.get("scalars"), Mapping):
        raise ValueError("state carries no optimiser state")
    _check_groups(saved.get("param_groups"), optimizer.state_dict()["param_groups"])
    for key, v in saved["scalars"].items():
        idx, _, name = key.partition("/")
        if not (idx.isdigit() and int(idx) < len(params) and name) or type(v) not in (int, float, bool):
            raise ValueError(f"optimiser setting {capped(key, 200)!r} = {capped(repr(v), 80)} fits no parameter")
        optim.setdefault(int(idx), {})[name] = v
    optimizer.load_state_dict({"state": optim, "param_groups": saved["param_groups"]})
