"""``splitlearn experiment privacy``: every registered defence at a few strengths, each run attacked
by every attack, on one task; a privacy-utility curve per attack, read against its chance level.

The task is U-shaped (the client keeps the first and the last layers, so the labels never leave
it) with the small CNN on scikit-learn's digits, by default: every attack applies there. The
attackers are the server, from its own view: the smashed data it receives (reconstruction with a
decoder trained on auxiliary data, inversion without any, model completion from a handful of
known labels) and the cut gradients it receives (label clustering). Each defence is set up where
its registry entry says it runs (:data:`~splitlearn.privacy.defences.DEFENCES`).

A malicious server is tried once, on its own: feature-space hijacking replaces the client's
training rather than observing it, so it runs against a fresh client, unaware and then running its
fake-batch check, and the check is run against an honest server too, for its false alarms.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from splitlearn import runner
from splitlearn.config import DataConfig, ModelConfig, PrivacyConfig, RunConfig, SplitConfig, TrainConfig
from splitlearn.privacy.attacks.hijacking import FakeBatchCheck, HijackingServer, TaskServer, hijack
from splitlearn.privacy.attacks.label_leakage import GradientRecorder
from splitlearn.privacy.attacks.reconstruction import ssim
from splitlearn.privacy.defences import DEFENCES, defence
from splitlearn.report.leakage import write_matrix_report
from splitlearn.runner.attacks import complete_labels, invert_smashed, label_attack, reconstruct

__all__ = ["ATTACK_SCORES", "HIJACKING_STEPS", "STRENGTHS", "run_privacy_matrix"]

STRENGTHS = {"nopeek": (2.0, 8.0, 32.0), "smashed_dp": (0.005, 0.01, 0.02), "gradient_noise": (1.0, 3.0), "max_norm": (1.0,)}
"""The strengths each defence is trained at: NoPeek's a1; the noise multiplier at clip 1 (the
client sends 2,048 values a sample, so 0.02 already gives noise of about the clipped signal's
norm); the gradient-noise scale; max-norm has none."""

ATTACK_SCORES = {
    "reconstruction": ("reconstruction SSIM", "inputs"),
    "inversion": ("inversion SSIM", "inputs"),
    "label_clustering": ("label attack accuracy", "labels"),
    "model_completion": ("completion accuracy", "labels"),
}
"""Each attack's score in a row of the matrix, and what it infers."""

HIJACKING_STEPS = 2000
"""The steps the client trains under the hijacking server (the attack runs once, on a fresh client,
not on each defended run: it replaces training rather than observing it)."""


def _config(dataset: str, *, epochs: int, seed: int, device: str, out: Path) -> RunConfig:
    return RunConfig(
        data=DataConfig(name=dataset), model=ModelConfig(name="small_cnn"), split=SplitConfig(configuration="ushaped", clients=1),
        train=TrainConfig(epochs=epochs, batch_size=32, optimizer="adam", lr=3e-3, seed=seed, device=device),
        privacy=PrivacyConfig(leakage_batch_size=64), out=str(out / "runs"),
    )


def _defended(base: RunConfig, name: str, strength: float) -> tuple[RunConfig, dict[str, Callable] | None]:
    """The config and client outbox hooks that put defence ``name`` at ``strength`` in place."""
    if name == "none":
        return base, None
    if name == "nopeek":
        return replace(base, privacy=replace(base.privacy, nopeek_a1=strength, nopeek_ramp_epochs=min(3, base.train.epochs))), None
    if name == "smashed_dp":
        return replace(base, privacy=replace(base.privacy, dp_noise_multiplier=strength, dp_clip=1.0)), None
    # Label defences: the client computes the loss in U-shaped. Their noise is seeded from the run's
    # seed, so that the matrix repeats (in a deployment it is the site's secret).
    return base, {"client": defence(name).build(strength, seed=base.train.seed)}


def _attacked(config: RunConfig, hooks, data: Any, *, victims: int, inversion_steps: int) -> dict[str, Any]:
    """Train ``config`` with ``hooks``; every attack's score on it. ``data``: its training set."""
    grads = GradientRecorder("server")
    run = runner.train(config, observers=[grads], outbox=hooks)
    sim, last = run.sim, run.metrics["epochs"][-1]
    client = sim.parties[sim.coordinator.holder]
    train = client.shards["train"]
    labels = dict(zip(train.sample_ids.tolist(), train.labels["y"].tolist()))
    row = {"test_accuracy": last["test_accuracy"], "dcor": last.get("dcor"), "run": str(run.run_dir)}
    if "dp_epsilon" in last:
        row["dp_epsilon"] = last["dp_epsilon"]
    recon = reconstruct(sim, aux_samples=500)
    row["reconstruction SSIM"] = recon.ssim
    row["inversion SSIM"] = invert_smashed(sim, victims=victims, steps=inversion_steps).ssim
    row |= label_attack(sim, grads, labels, data.num_classes)
    row["completion accuracy"] = complete_labels(sim, data)[0].accuracy
    return row


def _chance(built: runner.Built) -> dict[str, float]:
    """Each attack's score without any information: SSIM of the mean training image for the input
    attacks, 1 / classes for the label attacks."""
    test = built.test.features
    mean = built.train.features.mean(0, keepdim=True).expand_as(test)
    blind = float(ssim(mean, test).mean()) if test.dim() == 4 else float("nan")
    guess = 1 / built.train.num_classes
    return {"reconstruction SSIM": blind, "inversion SSIM": blind, "label attack accuracy": guess, "completion accuracy": guess}


def _class_floor(built: runner.Built) -> dict[str, float]:
    """What the input attacks score knowing only each sample's class: SSIM of each test image
    against the mean training image of its class. A defence that keeps accuracy keeps the class
    readable from the smashed data, so it cannot hold a reconstruction much below this."""
    train, test = built.train, built.test
    if test.features.dim() != 4:
        return {}
    means = torch.stack([train.features[train.labels == c].mean(0) if bool((train.labels == c).any())
                         else train.features.mean(0) for c in range(train.num_classes)])
    floor = float(ssim(means[test.labels], test.features).mean())
    return {"reconstruction SSIM": floor, "inversion SSIM": floor}


def _finite(x: float) -> float | None:
    """``x``, or None where it is NaN (a check that saw no fake batch yet): matrix.json stays strict JSON."""
    return x if x == x else None


def _hijacking(built: runner.Built, *, steps: int, victims: int, seed: int,
               progress: Callable[[str], None] = lambda message: None) -> dict[str, Any]:
    """FSHA by a malicious server against a fresh client of the matrix's task, three ways: the
    client unaware; the client running the fake-batch check; and, for the check's false alarms and
    its cost, an honest server (the rest of the same network, trained on the labels) with the check
    on and without it (test accuracy of each).

    The client trains on the first two thirds of the training set; the server's public data is the
    last third (disjoint); the attack is scored on the first ``victims`` test inputs."""
    sim = runner.simulation(built)  # untrained: the attack runs from the first step of training
    client = sim.parties[sim.coordinator.holder]
    plan = sim.plan
    bottom = next(n for n in client.nodes.values() if not n.inputs)
    middle = plan.consumer(bottom.name)
    rest = torch.nn.Sequential(sim.parties[middle.role].modules[middle.name], client.modules[plan.root.name])
    device = client.device
    shard = client.shards["train"]
    cut = 2 * len(shard.features) // 3
    x, y = shard.features.to(device), shard.labels["y"].to(device)
    private_x, private_y, public = x[:cut], y[:cut], x[cut:]
    victim_x = client.shards["test"].features[:victims].to(device)
    segment = client.modules[bottom.name]
    z_shape = tuple(segment(private_x[:2]).shape[1:])
    classes = built.train.num_classes
    every = max(1, steps // 10)

    def malicious() -> HijackingServer:
        return HijackingServer(public, z_shape, architecture=segment, lr=3e-4, seed=seed)

    fresh = lambda: copy.deepcopy(segment)  # noqa: E731  (each scenario starts from the same initial client)
    unaware = hijack(fresh(), malicious(), private_x, private_y, victim_x, steps=steps, lr=3e-4, every=every, seed=seed)
    progress(f"hijacking [1/3]: an unaware client, reconstruction SSIM {unaware.result.ssim:.3f} after {steps} steps")
    check = FakeBatchCheck(num_classes=classes, seed=seed + 1)
    checked = hijack(fresh(), malicious(), private_x, private_y, victim_x, steps=steps, lr=3e-4, check=check, seed=seed)
    progress(f"hijacking [2/3]: a client running the check, stopped at step {checked.stopped_at} "
             f"(SSIM {checked.result.ssim:.3f})")
    test_x, test_y = client.shards["test"].features.to(device), client.shards["test"].labels["y"].to(device)

    def honest_run(check: FakeBatchCheck | None):
        """Train a fresh client with an honest server; the run and the test accuracy it reached."""
        bottom_copy, top = fresh(), copy.deepcopy(rest)
        run = hijack(bottom_copy, TaskServer(top), private_x, private_y, victim_x, steps=steps, lr=1e-3, check=check,
                     every=every, seed=seed)
        with torch.no_grad():
            accuracy = float((top.eval()(bottom_copy.eval()(test_x)).argmax(1) == test_y).float().mean())
        return run, accuracy

    honest_check = FakeBatchCheck(num_classes=classes, seed=seed + 1)
    honest, checked_accuracy = honest_run(honest_check)
    _, plain_accuracy = honest_run(None)
    progress("hijacking [3/3]: the check against an honest server, "
             + ("no alarm" if honest.stopped_at is None else f"false alarm at step {honest.stopped_at}")
             + f"; test accuracy {checked_accuracy:.4f} with the check, {plain_accuracy:.4f} without")
    return {
        "steps": steps, "public": len(public), "victims": len(victim_x),
        "history": [[step, score] for step, score, _ in unaware.history], "ssim": unaware.result.ssim, "mse": unaware.result.mse,
        "checked": {"stopped_at": checked.stopped_at, "fakes": check.fakes, "score": _finite(checked.score), "ssim": checked.result.ssim},
        "honest": {"stopped_at": honest.stopped_at, "fakes": honest_check.fakes, "score": _finite(honest.score),
                   "accuracy": checked_accuracy, "accuracy_without_check": plain_accuracy,
                   "lowest_score": _finite(min((score for _, _, score in honest.history[1:] if score == score), default=honest.score))},
        "threshold": check.threshold,
        # a few of the victims' inputs and what the server decoded of them, unaware and where the check stopped
        "pictures": {key: (images.float() * 1e4).round().div(1e4).tolist() for key, images in (
            ("originals", unaware.result.originals), ("unaware", unaware.result.reconstructions),
            ("checked", checked.result.reconstructions))},
    }


def run_privacy_matrix(
    out: str | Path,
    *,
    dataset: str = "digits",
    epochs: int = 10,
    strengths: dict[str, Sequence[float]] | None = None,
    seed: int = 0,
    device: str = "cpu",
    victims: int = 64,
    inversion_steps: int = 500,
    hijacking_steps: int | None = None,
    progress: Callable[[str], None] = lambda message: None,
) -> dict[str, Any]:
    """Train the undefended task and each defence at each strength, attack every run with every
    attack, write ``report.html`` and ``matrix.json`` into ``out``; return the matrix."""
    out = Path(out)
    strengths = dict(STRENGTHS if strengths is None else strengths)
    unknown = set(strengths) - set(DEFENCES)
    if unknown:
        raise ValueError(f"unknown defences {sorted(unknown)}; known: {', '.join(sorted(DEFENCES))}")
    base = _config(dataset, epochs=epochs, seed=seed, device=device, out=out)
    built = runner.build(base)  # the data every run trains on (the defences change no data setting)
    plan = [("none", 0.0)] + [(name, s) for name in sorted(strengths) for s in strengths[name]]
    rows = []
    for i, (name, strength) in enumerate(plan, 1):
        label = "undefended" if name == "none" else f"{name} {strength:g}"
        progress(f"[{i}/{len(plan)}] {label}: training and attacking")
        config, hooks = _defended(base, name, strength)
        row = {"defence": name, "strength": strength} | _attacked(config, hooks, built.train, victims=victims, inversion_steps=inversion_steps)
        progress(f"[{i}/{len(plan)}] {label}: accuracy {row['test_accuracy']:.4f}, "
                 + ", ".join(f"{key} {row[key]:.3f}" for key, _ in ATTACK_SCORES.values()))
        rows.append(row)
    hijacking_steps = HIJACKING_STEPS if hijacking_steps is None else hijacking_steps
    progress(f"hijacking: a malicious server against a fresh client, {hijacking_steps} steps, with and without the client's check")
    hijacked = _hijacking(built, steps=hijacking_steps, victims=victims, seed=seed, progress=progress)
    chance = _chance(built)
    matrix = {"dataset": dataset, "epochs": epochs, "config": base.to_dict(), "chance": chance,
              "class_floor": _class_floor(built), "rows": rows, "hijacking": hijacked,
              "attacks": {name: {"score": key, "target": target} for name, (key, target) in ATTACK_SCORES.items()}}
    out.mkdir(parents=True, exist_ok=True)
    (out / "matrix.json").write_text(json.dumps(matrix, indent=2))
    write_matrix_report(out / "report.html", matrix, defences={n: d.method for n, d in DEFENCES.items()})
    return matrix
