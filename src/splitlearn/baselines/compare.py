"""Split learning, FedAvg and large-batch SGD trained on one task, and their costs side by side."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from splitlearn import runner
from splitlearn.accounting import wire_bytes
from splitlearn.baselines.fedavg import fedavg
from splitlearn.baselines.large_batch import large_batch_sgd
from splitlearn.config import RunConfig
from splitlearn.models import build_model
from splitlearn.split.compression import CODECS
from splitlearn.split.transport import MessageLog

__all__ = ["METHODS", "compare", "compression_costs", "cut_bytes", "summary"]

METHODS = ("split", "fedavg", "large_batch_sgd")


def compare(
    config: RunConfig, *, methods: Sequence[str] = METHODS, compressions: Sequence[str] = (),
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, dict[str, Any]]:
    """Metrics by method, each trained for ``config.train.epochs`` on the same data, partition,
    initial weights, batch size and optimiser: ``split`` is the vanilla split of ``config`` with
    raw tensors at the cut (a run folder under ``config.out``), ``fedavg`` one local epoch per
    round. Each codec in ``compressions`` (fp16, int8, topk at ``config.compression.topk_ratio``)
    trains the split again with that codec at the cut, as ``split <codec>``. ``train_bytes``: the
    bytes of training messages alone (split learning also evaluates through the protocol).
    ``progress(line)`` hears of each method's start and of each of its epochs (FedAvg: rounds)."""
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown methods {sorted(unknown)}; known: {', '.join(METHODS)}")
    unknown = set(compressions) - set(CODECS)
    if unknown:
        raise ValueError(f"unknown codecs {sorted(unknown)}; known: {', '.join(CODECS)}")
    if compressions and "split" not in methods:
        raise ValueError("compressions compare split learning with itself: methods must include 'split'")
    config = config.override({"split.configuration": "vanilla", "compression.codec": "none"})
    c = config.train
    out = {}
    for codec in ("none", *compressions) if "split" in methods else ():
        log = MessageLog()
        train_only = lambda m: None if getattr(m, "mode", "train") == "eval" or m.kind == "Output" else log(m)  # noqa: E731
        key = "split" if codec == "none" else f"split {codec}"
        progress(f"{key}: training")
        metrics = runner.train(config.override({"compression.codec": codec}), observers=[train_only],
                                   on_epoch=lambda record, key=key: progress(f"{key}: {runner.epoch_summary(record)}")).metrics
        out[key] = metrics | {"train_bytes": wire_bytes(log.records, groups=metrics["accounting"]["parties"])}
    built = runner.build(config)
    options = runner.party_options(built)
    del options["targets"], options["outbox"], options["inbox"], options["releases"]
    for method in (m for m in METHODS[1:] if m in methods):
        progress(f"{method}: training {c.epochs} {'rounds' if method == 'fedavg' else 'epochs'}")
        torch.manual_seed(c.seed)  # the initial weights runner.build gives the split model
        model = build_model(config.model.name, in_shape=tuple(built.train.sample_shape), num_classes=built.train.num_classes)
        said = lambda record, method=method: progress(f"{method}: {runner.epoch_summary(record)}")  # noqa: E731
        if method == "fedavg":
            run = fedavg(model, rounds=c.epochs, local_epochs=1, batch_size=c.batch_size, on_epoch=said, **options)
        else:
            run = large_batch_sgd(model, epochs=c.epochs, batch_size=c.batch_size, on_epoch=said, **options)
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


def cut_bytes(metrics: dict[str, Any]) -> float:
    """Per client (mean over clients), the training bytes at the cut of a split run of
    :func:`compare`: smashed data sent (with its sample ids) and gradients received."""
    wire = metrics["train_bytes"]["mean_per_party"]["client"]
    return wire["sent_by_kind"].get("Activation", 0) + wire["received_by_kind"].get("Gradient", 0)


def compression_costs(runs: dict[str, dict[str, Any]]) -> dict[str, dict[str, float]]:
    """For the split runs among :func:`compare`'s results, by codec (``none`` first): cut-layer
    bytes per client, how many times fewer than ``none`` (``saving``), final test accuracy and
    its change from ``none`` in points."""
    base = runs["split"]
    out = {}
    for key, metrics in runs.items():
        if key == "split" or key.startswith("split "):
            accuracy, n = metrics["epochs"][-1]["test_accuracy"], cut_bytes(metrics)
            out[key.partition(" ")[2] or "none"] = {
                "cut_bytes": n,
                "saving": cut_bytes(base) / n,
                "test_accuracy": accuracy,
                "accuracy_change_points": 100 * (accuracy - base["epochs"][-1]["test_accuracy"]),
            }
    return out
