"""From a run configuration to a run folder, and back: :mod:`~splitlearn.runner.assembly` turns a
config into data and a split, :mod:`~splitlearn.runner.training` trains it in one process into a run
folder, :mod:`~splitlearn.runner.prediction` and :mod:`~splitlearn.runner.attacks` use what a run
trained, :mod:`~splitlearn.runner.files` checks what run folders hold, and
:mod:`~splitlearn.runner.nopeek_study` compares training with and without NoPeek. Deployments
(:mod:`splitlearn.deploy`) build and write run folders through the same functions."""

from splitlearn.runner.assembly import Built, build, own_shards, party_options, simulation
from splitlearn.runner.leakage import client_leakage, party_leakage, privacy_spent
from splitlearn.runner.prediction import load_run, predict, write_predictions
from splitlearn.runner.training import (
    CHECKPOINTS,
    Interrupted,
    TrainedRun,
    epoch_summary,
    fingerprint,
    new_run_dir,
    train,
    write_metrics,
)

__all__ = [
    "CHECKPOINTS", "Built", "Interrupted", "TrainedRun", "build", "client_leakage", "epoch_summary", "fingerprint", "load_run",
    "new_run_dir", "own_shards", "party_leakage", "party_options", "predict", "privacy_spent", "simulation", "train", "write_metrics",
    "write_predictions",
]
