"""Large-batch synchronous SGD: data-parallel training with a parameter server."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
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
from splitlearn.split.messages import Message, Weights
from splitlearn.split.state import OptimizerSpec
from splitlearn.split.transport import MessageLog

__all__ = ["ModelGradients", "large_batch_sgd"]


@dataclass(frozen=True, slots=True)
class ModelGradients(Message):
    """A client's gradients of its mean batch loss for every parameter, by parameter name."""

    grads: dict[str, torch.Tensor]
    samples: int


def large_batch_sgd(
    model: nn.Module,
    *,
    train,
    test=None,
    clients: int = 1,
    epochs: int = 1,
    batch_size: int = 32,
    optimizer: OptimizerSpec = OptimizerSpec(),
    partition: str = "iid",
    alpha: float = 0.5,
    seed: int = 0,
    device: str | torch.device = "cpu",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
) -> BaselineRun:
    """Train ``model`` (left untouched) by synchronous data-parallel SGD over ``clients`` shards.

    Each step every client with batches left in the epoch sends the gradients of its next batch
    (:class:`ModelGradients`); the server averages them weighted by batch size, so the step is
    that of the union batch, applies ``optimizer`` and sends the new weights to every client
    (:class:`Weights`). The model is evaluated on ``test`` after each epoch; ``on_epoch(record)``
    hears of each epoch's record.
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    device = torch.device(device)
    names = client_names(clients)
    parts = deal(train.labels, clients, partition=partition, alpha=alpha, seed=seed)
    data = [(train.features[idx].to(device), train.labels[idx].to(device)) for idx in parts]
    server, worker = copy.deepcopy(model).to(device), copy.deepcopy(model).to(device)  # worker: the client at work
    params = dict(server.named_parameters())
    opt = optimizer.build(params.values())
    meter, log = FlopMeter(), MessageLog()
    history, start, step = [], time.perf_counter(), 0
    for epoch in range(1, epochs + 1):
        epoch_start, losses = time.perf_counter(), []
        schedule = [shuffled_batches(torch.arange(len(y)), batch_size, key=(seed, epoch, k)) for k, (_, y) in enumerate(data)]
        for s in range(max(map(len, schedule))):
            step += 1
            ups = []
            for name, (x, y), batches in zip(names, data, schedule):
                if s >= len(batches):
                    continue
                worker.zero_grad()
                losses.append(train_step(worker, x[batches[s]], y[batches[s]], meter))
                grads = snapshot((k, p.grad) for k, p in worker.named_parameters())
                ups.append(ModelGradients(name, SERVER, step, grads=grads, samples=len(batches[s])))
                log(ups[-1])
            n = sum(u.samples for u in ups)
            for k, p in params.items():
                p.grad = sum(u.samples / n * u.grads[k] for u in ups)
            opt.step()
            state = snapshot(server.state_dict().items())
            for name in names:
                log(Weights(SERVER, name, step, destination=name, state=state))
            worker.load_state_dict(state)  # every client now holds these weights
        record = {"epoch": epoch, "train_loss": sum(losses) / len(losses)}
        history.append(record | (evaluate(server, test, device=device) if test is not None else {}) | {"seconds": time.perf_counter() - epoch_start})
        if on_epoch is not None:
            on_epoch(history[-1])
    mem = {
        "client": memory(worker, gradients=True, activations=meter.saved["client"]),
        SERVER: memory(server, gradients=True, optimizer=opt),
    }
    metrics = {"method": "large_batch_sgd", "epochs": history, "seconds": time.perf_counter() - start, "accounting": account(names, meter, log, mem)}
    return BaselineRun(metrics, log, server)
