"""Measured against modelled: real scaled-down training of split learning, FedAvg and large-batch
SGD, with per-client FLOPs and bytes from the accounting, beside what per-sample costs predict.

The predictions use only per-sample figures of the model (training FLOPs of the whole model and of
the client segment, the cut-layer size q, the parameter counts) and the run's sizes (samples per
client, epochs, batch size). For split learning the byte prediction is our own accounting, which
extends Singh et al. (2019) to what actually crosses the wire: per sample, the activation up and
the gradient down (q values of 4 bytes each) and 8-byte sample ids on the StartStep, Activation
and Labels messages plus the 8-byte label; per client and epoch, its segment and optimiser state
relayed in and out. Singh et al.'s closed form, 2(p/K)q + eta*N values, is printed beside it.
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

from splitlearn import runner
from splitlearn.baselines.compare import compare, summary
from splitlearn.config import DataConfig, ModelConfig, RunConfig, SplitConfig, TrainConfig
from splitlearn.data.partition import deal
from splitlearn.efficiency.comm_model import sl_per_client
from splitlearn.efficiency.tables import profile

__all__ = ["measure"]

VALUE = 4  # bytes per float32 value
ID = 8  # bytes per int64 sample id or label


def measure(
    *, dataset: str = "digits", model: str = "small_cnn", cut: str = "features.4", clients: tuple[int, ...] = (10, 100),
    epochs: int = 1, batch_size: int = 32, seed: int = 0, out: str = "runs/measure",
) -> list[dict[str, Any]]:
    """One row per (clients, method): measured and predicted client TFLOPs and bytes, and the
    relative error of each prediction."""
    base = RunConfig(
        data=DataConfig(name=dataset), model=ModelConfig(name=model, cut=(cut,)),
        split=SplitConfig(configuration="vanilla"),
        train=TrainConfig(epochs=epochs, batch_size=batch_size, optimizer="sgd", momentum=0.9, seed=seed), out=out,
    )
    built = runner.build(base)
    n = len(built.train)
    prof = profile(model, in_shape=tuple(built.train.sample_shape), num_classes=built.train.num_classes, cut=cut)
    slots = 1  # SGD with momentum keeps one buffer per parameter, relayed with the weights
    rows = []
    for k in clients:
        results = compare(replace(base, split=replace(base.split, clients=k)))
        per_client = n / k
        steps = sum(math.ceil(len(p) / batch_size) for p in _shards(built, k)) / k  # mean steps per client
        predicted = {
            "split": (
                prof.flops_client * per_client * epochs,
                epochs * (per_client * (2 * prof.cut_values * VALUE + 4 * ID) + 2 * (1 + slots) * prof.params_client * VALUE),
            ),
            "fedavg": (prof.flops_model * per_client * epochs, epochs * 2 * prof.params_model * VALUE),
            "large_batch_sgd": (prof.flops_model * per_client * epochs, epochs * steps * (2 * prof.params_model * VALUE + ID)),
        }
        singh = VALUE * sl_per_client(p=n * epochs, k=k, q=prof.cut_values, n=prof.params_model, eta=prof.eta)
        for method, metrics in results.items():
            got = summary(metrics)
            flops, wire = predicted[method]
            rows.append({
                "clients": k, "method": method,
                "tflops": got["client_tflops"], "tflops_model": flops / 1e12,
                "bytes": got["client_bytes"], "bytes_model": wire,
                "flops_error": abs(got["client_tflops"] * 1e12 - flops) / flops,
                "bytes_error": abs(got["client_bytes"] - wire) / wire,
                "singh_bytes": singh if method == "split" else VALUE * 2 * prof.params_model * epochs if method == "fedavg" else None,
            })
    return rows


def _shards(built: runner.Built, k: int):
    c = built.config
    return deal(built.train.labels, k, partition=c.data.partition, alpha=c.data.alpha, seed=c.train.seed)
