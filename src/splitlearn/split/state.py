"""Optimisers per party, and packing a party's segments plus optimiser state into plain tensors.

Packed state is ``dict[str, Tensor]`` plus JSON-compatible metadata, so it can be written with
safetensors or put on the wire without pickle.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

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


def unpack_state(
    tensors: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    modules: Mapping[str, nn.Module],
    optimizer: torch.optim.Optimizer | None = None,
) -> None:
    """Load what :func:`pack_state` produced into freshly built modules and optimiser."""
    if sorted(modules) != list(meta.get("nodes", [])):
        raise ValueError(f"state is for nodes {meta.get('nodes')}, but this party holds {sorted(modules)}")
    for node, m in modules.items():
        prefix = f"model/{node}/"
        m.load_state_dict({k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)})
    if optimizer is None:
        return
    if "optim" not in meta:
        raise ValueError("state carries no optimiser state")
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        if key.startswith("optim/"):
            _, idx, k = key.split("/", 2)
            state.setdefault(int(idx), {})[k] = v.clone()  # the optimiser updates these in place
    for key, v in meta["optim"]["scalars"].items():
        idx, k = key.split("/", 1)
        state.setdefault(int(idx), {})[k] = v
    optimizer.load_state_dict({"state": state, "param_groups": meta["optim"]["param_groups"]})
