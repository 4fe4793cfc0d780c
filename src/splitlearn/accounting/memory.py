"""Memory a party holds: its segments' state, gradients, optimiser state and saved activations."""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from splitlearn.split.party import Party

__all__ = ["party_memory", "tensor_bytes"]


def tensor_bytes(tensors: Iterable[torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def party_memory(party: Party, *, activations: int = 0) -> dict[str, int]:
    """Peak bytes of a party holding its segments: ``parameters``, ``buffers`` (e.g. batch-norm
    statistics), ``gradients`` (one per trainable parameter, held between backward and the
    optimiser step), ``optimizer`` (the tensors of its state dict, e.g. Adam's two moments and
    step counts) and ``activations`` (given, e.g. from :class:`~splitlearn.accounting.FlopMeter`),
    and their ``total``."""
    modules = nn.ModuleList((party.modules or {}).values())  # shared parameters count once
    params = list(modules.parameters())
    state = party.optimizer.state_dict()["state"].values() if party.optimizer is not None else ()
    out = {
        "parameters": tensor_bytes(params),
        "buffers": tensor_bytes(modules.buffers()),
        "gradients": tensor_bytes(p for p in params if p.requires_grad),
        "optimizer": tensor_bytes(v for entry in state for v in entry.values() if isinstance(v, torch.Tensor)),
        "activations": activations,
    }
    return out | {"total": sum(out.values())}
