"""Federated averaging (McMahan et al., 2017): clients train the whole model, the server averages."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from splitlearn.accounting import FlopMeter
from splitlearn.baselines._common import (
    SERVER,
    BaselineRun,
    account,
    client_names,
    evaluate,
    memory,
    snapshot,
    train_step,
)
from splitlearn.data.partition import deal
from splitlearn.split.coordinator import shuffled_batches
from splitlearn.split.messages import Weights
from splitlearn.split.state import OptimizerSpec
from splitlearn.split.transport import MessageLog

__all__ = ["fedavg"]


def fedavg(
    model: nn.Module,
    *,
    train,
    test=None,
    clients: int = 1,
    rounds: int = 1,
    local_epochs: int = 1,
    batch_size: int = 32,
    optimizer: OptimizerSpec = OptimizerSpec(),
    partition: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> BaselineRun:
    """Train ``model`` (left untouched) by FedAvg over ``clients`` shards dealt as in split learning.

    Each round the server sends the global weights to every client (a :class:`Weights` message);
    each client trains them for ``local_epochs`` on its shard with a fresh ``optimizer`` and sends
    them back; the server averages them weighted by shard size. After each round the global model
    is evaluated on ``test``; ``on_epoch(record)`` hears of each round's record.
    """
    if rounds < 1 or local_epochs < 1:
        raise ValueError(f"rounds and local_epochs must be >= 1, got {rounds}, {local_epochs}")
    device = torch.device(device)
    names = client_names(clients)
    parts = deal(train.labels, clients, partition=partition, alpha=alpha, seed=seed)
    weights = [len(p) / len(train.labels) for p in parts]
    server, worker = copy.deepcopy(model).to(device), copy.deepcopy(model).to(device)  # worker: the client at work
    meter, log = FlopMeter(), MessageLog()
    history, start, opt = [], time.perf_counter(), None
    for r in range(1, rounds + 1):
        total, losses, round_start = {}, [], time.perf_counter()
        for k, (name, idx) in enumerate(zip(names, parts)):
            down = Weights(SERVER, name, r, destination=name, state=snapshot(server.state_dict().items()))
            log(down)
            worker.load_state_dict(down.state)
            opt = optimizer.build(worker.parameters())
            x, y = train.features[idx].to(device), train.labels[idx].to(device)
            for e in range(local_epochs):
                for b in shuffled_batches(torch.arange(len(idx)), batch_size, key=(seed, r, e, k)):
                    opt.zero_grad()
                    losses.append(train_step(worker, x[b], y[b], meter))
                    opt.step()
            up = Weights(name, SERVER, r, destination=SERVER, state=snapshot(worker.state_dict().items()), meta={"samples": len(idx)})
            log(up)
            for key, v in up.state.items():
                total[key] = total.get(key, 0) + weights[k] * v
        server.load_state_dict({k: v.to(server.state_dict()[k].dtype) for k, v in total.items()})
        record = {"epoch": r, "train_loss": sum(losses) / len(losses)}
        history.append(record | (evaluate(server, test, device=device) if test is not None else {}) | {"seconds": time.perf_counter() - round_start})
        if on_epoch is not None:
            on_epoch(history[-1])
    mem = {
        "client": memory(worker, gradients=True, optimizer=opt, activations=meter.saved["client"]),
        SERVER: memory(server, gradients=False),
    }
    metrics = {"method": "fedavg", "epochs": history, "seconds": time.perf_counter() - start, "accounting": account(names, meter, log, mem)}
    return BaselineRun(metrics, log, server)
