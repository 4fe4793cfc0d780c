"""What the federated baselines share: shards, batches, evaluation and the accounting report."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from splitlearn.accounting import FlopMeter, tensor_bytes, wire_bytes
from splitlearn.split.transport import MessageLog

SERVER = "server"


@dataclass
class BaselineRun:
    metrics: dict[str, Any]  # ``epochs`` (one record per round or epoch) and ``accounting``
    log: MessageLog  # every message sent
    model: nn.Module  # the server's final model


def client_names(clients: int) -> list[str]:
    """Party names as split learning gives them: ``client``, or ``client0`` ... ``client{K-1}``."""
    return ["client"] if clients == 1 else [f"client{k}" for k in range(clients)]


def train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor, meter: FlopMeter) -> float:
    """Forward and backward one batch on a client, metered; return the loss."""
    with meter("forward", "client", len(y)):
        loss = F.cross_entropy(model(x), y)
    with meter("backward", "client", len(y)):
        loss.backward()
    return loss.item()


@torch.no_grad()
def evaluate(model: nn.Module, test, *, device: torch.device, batch_size: int = 512) -> dict[str, float]:
    """Test accuracy and mean loss of ``model`` (not metered: a measurement, not training)."""
    was_training = model.training
    model.eval()
    correct = loss = 0.0
    for x, y in zip(test.features.split(batch_size), test.labels.split(batch_size)):
        out = model(x.to(device))
        y = y.to(device)
        loss += F.cross_entropy(out, y, reduction="sum").item()
        correct += (out.argmax(-1) == y).sum().item()
    model.train(was_training)
    return {"test_accuracy": correct / len(test.labels), "test_loss": loss / len(test.labels)}


def memory(model: nn.Module, *, gradients: bool, optimizer: torch.optim.Optimizer | None = None, activations: int = 0) -> dict[str, int]:
    """Bytes a party holds, in the layout of :func:`~splitlearn.accounting.party_memory`."""
    params = list(model.parameters())
    state = optimizer.state_dict()["state"].values() if optimizer is not None else ()
    out = {
        "parameters": tensor_bytes(params),
        "buffers": tensor_bytes(model.buffers()),
        "gradients": tensor_bytes(p for p in params if p.requires_grad) if gradients else 0,
        "optimizer": tensor_bytes(v for entry in state for v in entry.values() if isinstance(v, torch.Tensor)),
        "activations": activations,
    }
    return out | {"total": sum(out.values())}


def account(clients: list[str], meter: FlopMeter, log: MessageLog, memory: dict[str, dict[str, int]]) -> dict[str, Any]:
    """The report :func:`splitlearn.accounting.account` gives for split learning, with the meter's
    nodes named after the roles (``client`` for every client's local computation)."""
    roles = {"client": clients, SERVER: [SERVER]}
    plan = SimpleNamespace(roles=tuple(roles), node=lambda name: SimpleNamespace(role=name))
    return {
        "parties": roles,
        "flops": meter.summary(plan, parties={r: len(names) for r, names in roles.items()}),
        "bytes": wire_bytes(log.records, groups=roles),
        "memory": memory,
    }


def snapshot(tensors: Iterable[tuple[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Detached copies, safe to send while the originals keep changing."""
    return {k: v.detach().clone() for k, v in tensors}
