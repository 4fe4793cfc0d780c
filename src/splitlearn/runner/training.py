"""Training in one process into a run folder (resolved config, metrics JSON, one safetensors file
per party), with checkpoints that an interrupted run resumes from."""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NamedTuple

from splitlearn import __version__
from splitlearn.accounting import FlopMeter, account
from splitlearn.checkpoint import write_json_atomic
from splitlearn.config import RunConfig, load_config
from splitlearn.data.registry import DATASETS
from splitlearn.privacy import NoPeek
from splitlearn.runner.assembly import build, simulation
from splitlearn.runner.files import METRICS, POSITION_IN_PROCESS, read_checked
from splitlearn.runner.leakage import client_leakage, privacy_spent
from splitlearn.split.messages import Message
from splitlearn.split.simulation import Simulation

__all__ = ["CHECKPOINTS", "Interrupted", "TrainedRun", "epoch_summary", "fingerprint", "new_run_dir", "train", "write_metrics"]


def new_run_dir(config: RunConfig) -> Path:
    """A fresh folder name under ``config.out``: time, configuration and data set."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    base = Path(config.out) / f"{stamp}-{config.split.configuration}-{config.data.name}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    return path


class TrainedRun(NamedTuple):
    run_dir: Path
    metrics: dict[str, Any]
    sim: Simulation  # the parties as trained, for attacks and analysis in the same process


class Interrupted(KeyboardInterrupt):
    """Training was interrupted (Ctrl-C); ``run_dir`` holds every party's checkpoint of ``step``,
    from which ``train(config, resume=run_dir)`` (``splitlearn train --resume``) goes on."""

    def __init__(self, run_dir: Path, step: int) -> None:
        super().__init__(f"interrupted; {run_dir} holds every party's checkpoint of step {step}")
        self.run_dir, self.step = run_dir, step


def epoch_summary(record: dict[str, Any]) -> str:
    """One line of an epoch's record: train loss, test accuracy and leakage, where measured."""
    acc = record.get("test_accuracy", record.get("test_accuracy_label"))
    line = f"epoch {record['epoch']}"
    parts = ([f"train loss {record['train_loss']:.4f}"] if "train_loss" in record else []) + (
        [f"test accuracy {acc:.4f}"] if acc is not None else []) + (
        [f"leakage DCOR(X, Z) {record['dcor']:.3f}" + (" (smashed data collapsed to a constant)" if record.get("collapsed") else "")]
        if "dcor" in record else []) + (
        [f"DP ε {record['dp_epsilon']:.2f} at δ {record['dp_delta']:.1e} (opacus RDP accountant)"] if "dp_epsilon" in record else []) + (
        [f"hijack check {name} {'score ' + format(c['score'], '.2f') if c['score'] is not None else 'no score yet'} after {c['fakes']} "
         f"fake batches" for name, c in record.get("hijack_check", {}).items()])
    return line + (": " + ", ".join(parts) if parts else "")


def fingerprint(config: RunConfig) -> str:
    """A short hash of what decides the parties' segments and data: checkpoints carry it, so a
    process never resumes from another configuration's checkpoints."""
    d = config.to_dict()
    d.pop("out", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


CHECKPOINTS = "checkpoints"
"""The folder of a run folder holding each party's checkpoints and ``position.json`` while it trains."""


def _resumable(run_dir: Path, config: RunConfig) -> dict[str, Any] | None:
    """The position an interrupted run folder of ``config`` stands at (None: it was interrupted
    before its first checkpoint); ``ValueError`` unless it is such a folder."""
    if not (run_dir / "config.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no config.json")
    if load_config(run_dir / "config.json") != config:
        raise ValueError(f"{run_dir} is a run of another configuration: resume it with its own config.json")
    metrics = run_dir / "metrics.json"
    if metrics.is_file() and read_checked(metrics, METRICS)["finished"]:
        raise ValueError(f"{run_dir} has finished: there is nothing to resume")
    position = run_dir / CHECKPOINTS / "position.json"
    if not position.is_file():
        return None
    state = read_checked(position, POSITION_IN_PROCESS)
    if state["tag"] != fingerprint(config):
        raise ValueError(f"{position}: its checkpoints are of another configuration")
    return state


def train(
    config: RunConfig,
    *,
    on_step: Callable[[int, int], None] | None = None,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    observers: Sequence[Callable[[Message], None]] = (),
    data: tuple[Any, Any] | None = None,
    outbox: Mapping[str, Callable[[Message], Message]] | None = None,
    resume: str | Path | None = None,
    checkpoint_every: int = 20,
) -> TrainedRun:
    """Train as configured; write the run folder; return it with the metrics and the parties.

    ``observers`` see every message sent during training (e.g. an attacker's recorder);
    ``outbox`` adds hooks by role to what the parties send (e.g. a defence), before the codec.
    ``data`` = (train, test) trains on the caller's data (ArrayDatasets, TensorDatasets or any
    map-style Datasets of (x, y) pairs) instead of ``config.data``; the run folder, its metrics
    (DCOR per epoch) and ``splitlearn report`` work as for any run. ``splitlearn predict`` needs
    data it can load again, so it does not apply to such a run.

    While it trains, every party checkpoints in ``<run>/checkpoints`` every ``checkpoint_every``
    steps and at the end of each client's turn and epoch. Interrupted (Ctrl-C), it raises
    :class:`Interrupted`; ``resume=<run>`` with the same config (and data) goes on from the last
    checkpoint to the weights an uninterrupted run reaches, bit for bit on the same device. The
    checkpoints are removed once the run has finished. The accounting (FLOPs, memory, bytes) of a
    resumed run covers the steps run since it was resumed.
    """
    if data is not None and config.data.name in DATASETS:
        config = config.override({"data.name": "own-data"})  # the run folder must not claim a data set it did not use
    if checkpoint_every < 1:
        raise ValueError(f"checkpoint_every must be >= 1, got {checkpoint_every}")
    state = None if resume is None else _resumable(Path(resume), config)
    built = build(config, data=data)
    meter = FlopMeter()
    privacy = config.privacy
    data_nodes = [n.name for n in built.split.plan.nodes if not n.inputs]
    nopeek = NoPeek(privacy.nopeek_a1, a2=privacy.nopeek_a2, ramp_epochs=privacy.nopeek_ramp_epochs) if privacy.nopeek_a1 else None
    sim = simulation(built, hooks=outbox, compute=meter, penalties=dict.fromkeys(data_nodes, nopeek) if nopeek else None)
    sim.transport.observers.extend(observers)
    if resume is None:
        run_dir = new_run_dir(config)
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps(config.to_dict(), indent=2))
    else:
        run_dir = Path(resume)
    folder, tag = run_dir / CHECKPOINTS, fingerprint(config)
    sim.checkpoint_to(folder, tag=tag, fresh=state is None)
    if state is not None:
        sim.go_on_from(state)
        sim.coordinator.restart()  # every party back to the last step all checkpointed
        if nopeek is not None:
            nopeek.set_epoch(len(sim.history) + 1)
    start = time.perf_counter() - (state or {}).get("seconds", 0.0)
    sim.coordinator.checkpoint_every = checkpoint_every
    sim.coordinator.on_commit = lambda: write_json_atomic(
        folder / "position.json", {"tag": tag, "seconds": time.perf_counter() - start} | sim.position())
    extra = ({} if state is None else {"resumed_at_step": state["coordinator"]["committed"]}) | (
        {"alignment": built.alignment} if built.alignment else {})

    def epoch_done(record: dict[str, Any]) -> None:
        record |= client_leakage(sim, batch_size=privacy.leakage_batch_size) | privacy_spent(config, sim, record["epoch"])
        if privacy.hijack_check:
            from splitlearn.privacy.attacks.hijacking import guard_summary

            record["hijack_check"] = guard_summary(sim.parties.values())
        if nopeek is not None:
            record["nopeek_weight"] = nopeek.weight
            nopeek.set_epoch(record["epoch"] + 1)
        sim.coordinator.on_commit()  # the epoch's record joins the position
        write_metrics(run_dir, sim, time.perf_counter() - start, finished=False, accounting=account(sim, meter), **extra)
        if on_epoch is not None:
            on_epoch(record)

    try:
        if (remaining := config.train.epochs - len(sim.history)) > 0:
            sim.fit(remaining, on_step=on_step, on_epoch=epoch_done)
    except KeyboardInterrupt:
        write_metrics(run_dir, sim, time.perf_counter() - start, finished=False, accounting=account(sim, meter), **extra)
        raise Interrupted(run_dir, sim.coordinator.committed) from None
    sim.save_weights(run_dir / "weights")
    metrics = write_metrics(run_dir, sim, time.perf_counter() - start, finished=True, accounting=account(sim, meter), **extra)
    shutil.rmtree(folder)
    return TrainedRun(run_dir, metrics, sim)



def write_metrics(run_dir: Path, sim: Simulation, seconds: float, *, finished: bool, **extra: Any) -> dict[str, Any]:
    """Write ``metrics.json`` of a run folder, in-process or served alike: the epochs so far (each
    with its leakage where measured), bytes on the wire, and ``extra`` (e.g. FLOP accounting, the
    parties that ran elsewhere); return what was written."""
    metrics = {
        "splitlearn_version": __version__,
        "finished": finished,
        "seconds": seconds,
        "epochs": sim.history,
        "parties": sorted(sim.parties),
        "bytes_sent": sim.log.bytes_by("sender"),
        "bytes_received": sim.log.bytes_by("receiver"),
        "bytes_by_kind": sim.log.bytes_by("kind"),
        "messages": sim.log.messages,
    } | extra
    write_json_atomic(run_dir / "metrics.json", metrics)
    return metrics


