"""A finished run folder's parties back with their trained weights, and their predictions."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from splitlearn import __version__
from splitlearn.config import load_config
from splitlearn.runner.assembly import Built, build, simulation
from splitlearn.runner.files import METRICS, VERSIONED, check, read_checked
from splitlearn.split.simulation import Simulation

__all__ = ["load_run", "predict", "write_predictions"]


def load_run(run_dir: str | Path, *, device: str | None = None,
             weights: Sequence[str | Path] = ()) -> tuple[Built, Simulation, dict[str, Any]]:
    """Rebuild a finished run folder's parties with their trained weights (round-robin clients
    collapse to the one that holds the weights), from ``<run>/weights`` and the folders of
    ``weights`` (a deployment's clients keep theirs at their sites). Refuses folders of another
    splitlearn version."""
    run_dir = Path(run_dir)
    config_path, metrics_path = run_dir / "config.json", run_dir / "metrics.json"
    if not config_path.is_file() or not metrics_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it needs config.json and metrics.json")
    metrics = read_checked(metrics_path, VERSIONED)
    version = metrics["splitlearn_version"]
    if version != __version__:
        raise ValueError(f"{run_dir} was written by splitlearn {version}, this is {__version__}: retrain it")
    check(metrics, METRICS, metrics_path)
    if not metrics["finished"]:
        raise ValueError(f"{run_dir} holds an unfinished run (no final weights)")
    config = load_config(config_path, {"train.device": device} if device else None)
    if config.data.sites == "own":
        raise ValueError(f"{run_dir} was trained on the sites' own data (data.sites = 'own'), which stays at the sites, so it cannot "
                         "be loaded in one process: predict through the deployment (splitlearn predict RUN --listen, and "
                         "join --predict at each site); attack a rehearsal of it with data.sites = 'dealt'")
    built = build(config)
    sim = simulation(built, clients=1 if built.split.plan.data_roles == ("client",) else config.split.clients)
    sim.load_weights(run_dir / "weights", *weights)
    return built, sim, metrics


def predict(run_dir: str | Path, *, split: str = "test", device: str | None = None,
            weights: Sequence[str | Path] = ()) -> tuple[Path, dict[str, float]]:
    """Reload a run folder's weights (and those in the folders of ``weights``, see
    :func:`load_run`), predict ``split`` through the protocol, write a CSV."""
    run_dir = Path(run_dir)
    built, sim, _ = load_run(run_dir, device=device, weights=weights)
    outputs, scores = sim.predict(split)
    data = built.test if split == "test" else built.train
    targets = built.targets or {task: lambda y: y for task in outputs}
    labels = {task: dict(zip(data.sample_ids.tolist(), targets[task](data.labels).tolist())) for task in outputs}
    return write_predictions(run_dir / f"predictions-{split}.csv", outputs, labels), scores


def write_predictions(path: str | Path, outputs: dict[str, tuple[torch.Tensor, torch.Tensor]],
                      labels: dict[str, dict[int, int]]) -> Path:
    """A CSV of ``sample_id, task, prediction, label`` rows: the predicted class of each output
    (``outputs``: task -> (sample ids, outputs)) beside its label (``labels``: task -> id -> class)."""
    path = Path(path)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["sample_id", "task", "prediction", "label"])
        for task, (ids, logits) in outputs.items():
            for i, p in zip(ids.tolist(), logits.argmax(-1).tolist()):
                w.writerow([i, task, p, labels[task][i]])
    tmp.replace(path)
    return path
