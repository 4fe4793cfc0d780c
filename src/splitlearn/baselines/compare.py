"""Split learning, FedAvg and large-batch SGD trained on one task, and their costs side by side."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from splitlearn import experiment
from splitlearn.accounting import wire_bytes
from splitlearn.baselines.fedavg import fedavg
from splitlearn.baselines.large_batch import large_batch_sgd
from splitlearn.config import RunConfig
from splitlearn.models import build_model
from splitlearn.split.transport import MessageLog

__all__ = ["METHODS", "compare", "summary"]

METHODS = ("split", "fedavg", "large_batch_sgd")


def compare(config: RunConfig, *, methods: Sequence[str] = METHODS) -> dict[str, dict[str, Any]]:
    """Metrics by method, each trained for ``config.train.epochs`` on the same data, partition,
    initial weights, batch size and optimiser: ``split`` is the vanilla split of ``config``
    (a run folder under ``config.out``), ``fedavg`` one local epoch per round. ``train_bytes``:
    the bytes of training messages alone (split learning also evaluates through the protocol)."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; known: {', '.join(METHODS)}")
    config = config.override({"split.configuration": "vanilla"})
    c = config.train
    out = {}
    if "split" in methods:
        log = MessageLog()
        train_only = lambda m: None if getattr(m, "mode", "train") == "eval" or m.kind == "Output" else log(m)  # noqa: E731
        metrics = experiment.train(config, observers=[train_only]).metrics
        out["split"] = metrics | {"train_bytes": wire_bytes(log.records, groups=metrics["accounting"]["parties"])}
    built = experiment.build(config)
    options = experiment.party_options(built)
    del options["targets"], options["outbox"]
    for method in (m for m in METHODS[1:] if m in methods):
        torch.manual_seed(c.seed)  # the initial weights experiment.build gives the split model
        model = build_model(config.model.name, in_shape=tuple(built.train.sample_shape), num_classes=built.train.num_classes)
        if method == "fedavg":
            run = fedavg(model, rounds=c.epochs, local_epochs=1, batch_size=c.batch_size, **options)
        else:
            run = large_batch_sgd(model, epochs=c.epochs, batch_size=c.batch_size, **options)
        out[method] = run.metrics | {"train_bytes": run.metrics["accounting"]["bytes"]}  # all their messages train
    return out


def summary(metrics: dict[str, Any]) -> dict[str, float]:
    """Final test accuracy and, per client (mean over clients), training TFLOPs (forward and
    backward), training bytes sent plus received, and peak memory in bytes."""
    acc = metrics["accounting"]
    flops = acc["flops"]["mean_per_party"]["client"]
    wire = metrics["train_bytes"]["mean_per_party"]["client"]
    return {
        "test_accuracy": metrics["epochs"][-1]["test_accuracy"],
        "client_tflops": (flops["forward"] + flops["backward"]) / 1e12,
        "client_bytes": wire["sent"] + wire["received"],
        "client_memory": acc["memory"]["client"]["total"],
    }
