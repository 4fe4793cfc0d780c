"""Attacks and the leakage report on a finished run folder.

``splitlearn attack reconstruction|labels RUN`` rebuilds the run's parties with their trained
weights, plays the curious party (the one receiving the smashed data, or the cut gradients), and
stores what it achieved in ``RUN/attacks.json``; ``splitlearn report RUN`` turns the run's
metrics and those results into ``RUN/report.html``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from splitlearn.checkpoint import write_json_atomic
from splitlearn.config import load_config
from splitlearn.privacy.attacks.inversion import inversion_attack
from splitlearn.privacy.attacks.label_leakage import GradientRecorder, cluster_accuracy, direction_scores, leak_auc, norm_scores
from splitlearn.privacy.attacks.model_completion import ModelCompletionResult, labelled_handful, model_completion_attack
from splitlearn.privacy.attacks.reconstruction import ActivationRecorder, ReconstructionResult, reconstruction_attack
from splitlearn.report import RunEvidence, write_report
from splitlearn.runner import load_run
from splitlearn.runner.files import ATTACKS, METRICS, RunFileError, read_checked
from splitlearn.split.simulation import Simulation

__all__ = ["attack_completion", "attack_inversion", "complete_labels", "attack_labels", "attack_reconstruction", "invert_smashed", "label_attack", "reconstruct", "report"]

RECONSTRUCTIONS = "attack-reconstruction.safetensors"


def _single_client(sim: Simulation):
    roles = sim.plan.data_roles
    if len(roles) != 1:
        raise ValueError(f"this attack needs one data role; the run's plan has {list(roles)}")
    return sim.parties[sim.coordinator.holder]


def _smashed_edge(sim: Simulation) -> tuple[Any, Any, str]:
    """The client, its data node, and the name of the party receiving that node's smashed data."""
    client = _single_client(sim)
    node = next(n for n in client.nodes.values() if not n.inputs)
    return client, node, sim.parties[sim.plan.consumer(node.name).role].name


def reconstruct(sim: Simulation, *, aux_samples: int = 1000, epochs: int = 25) -> ReconstructionResult:
    """The party receiving the client's smashed data reconstructs the client's test inputs.

    Its auxiliary pairs: ``aux_samples`` training inputs through the client's segment (query
    access or a colluding client), disjoint from the victim's test inputs.
    """
    client, node, attacker, ids, victim_z = _seen(sim, "test")
    victim_x = client.shards["test"].features[client.shards["test"].rows(ids)]
    aux_x = client.shards["train"].features[:aux_samples]
    module = _as_sent(client, node.name)
    was_training = module.training
    module.eval()
    with torch.no_grad():
        aux_z = module(aux_x.to(client.device)).cpu()
    module.train(was_training)
    return reconstruction_attack(aux_z, aux_x, victim_z, victim_x, epochs=epochs)


class _Sent(nn.Module):
    """A client segment followed by what the client does to its output before sending it (a
    release such as DP noise): the pipeline an attacker with query access, or who knows the
    defence in place, reproduces."""

    def __init__(self, segment: nn.Module, release) -> None:
        super().__init__()
        self.segment, self.release = segment, release

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.release(self.segment(x))


def _as_sent(client, node: str) -> nn.Module:
    release = client.releases.get(node)
    return client.modules[node] if release is None else _Sent(client.modules[node], release)


def _seen(sim: Simulation, split: str) -> tuple[Any, Any, str, torch.Tensor, torch.Tensor]:
    """The client, its data node, the party receiving its smashed data, and the (sample ids,
    smashed data) that party records off the wire during one evaluation pass over ``split``."""
    client, node, attacker = _smashed_edge(sim)
    recorder = ActivationRecorder(attacker, src=node.name)
    sim.transport.observers.append(recorder)
    try:
        sim.evaluate(split)
    finally:
        sim.transport.observers.remove(recorder)
    return client, node, attacker, *recorder.smashed()


def _victims(sim: Simulation, victims: int) -> tuple[Any, Any, str, torch.Tensor, torch.Tensor]:
    """The smashed data of the first ``victims`` test samples as the receiving party sees it, and
    those samples' private inputs."""
    client, node, attacker, ids, victim_z = _seen(sim, "test")
    ids, victim_z = ids[:victims], victim_z[:victims]
    return client, node, attacker, victim_z, client.shards["test"].features[client.shards["test"].rows(ids)]


def invert_smashed(sim: Simulation, *, victims: int = 64, steps: int = 1000) -> ReconstructionResult:
    """The party receiving the client's smashed data inverts it without any auxiliary data (UnSplit,
    :mod:`~splitlearn.privacy.attacks.inversion`): it knows the client segment's architecture only."""
    client, node, _, victim_z, victim_x = _victims(sim, victims)
    return inversion_attack(victim_z, _as_sent(client, node.name), victim_x, steps=steps,
                            tv=0.01 if victim_x.dim() == 4 else 0.0)


def _gradient_receiver(sim: Simulation) -> str:
    root = sim.plan.root
    label_roles = {h.label_role for h in root.heads}
    if label_roles != {root.role}:
        raise ValueError(
            f"the loss is computed by {root.role!r} from labels sent by {sorted(label_roles)}: that party receives "
            "the labels themselves, so there is nothing to infer (label attacks apply to U-shaped and vertical splits)"
        )
    producer = sim.plan.node(root.inputs[0]).role if root.inputs else None
    if producer is None or producer == root.role:
        raise ValueError("no other party receives gradients from the label owner in this plan")
    group = sim.coordinator.group_role
    return sim.coordinator.holder if producer == group else producer


def label_attack(sim: Simulation, recorder: GradientRecorder, labels: dict[int, int], num_classes: int, *, steps: int = 40) -> dict[str, float]:
    """Leak metrics of what ``recorder`` saw: AUCs for binary tasks, clustering accuracy otherwise."""
    truth = lambda ids: torch.tensor([labels[i] for i in ids.tolist()])  # noqa: E731
    if num_classes == 2:
        d_ids, d_scores = direction_scores(recorder)
        n_ids, n_scores = norm_scores(recorder)
        return {"label direction AUC": leak_auc(d_scores, truth(d_ids)), "label norm AUC": leak_auc(n_scores, truth(n_ids))}
    recorder.steps = recorder.steps[-steps:]
    return {"label attack accuracy": cluster_accuracy(recorder, truth, num_classes)}


def _merge(run_dir: Path, results: dict[str, Any]) -> dict[str, Any]:
    path = run_dir / "attacks.json"
    merged = (read_checked(path, ATTACKS) if path.is_file() else {}) | results
    write_json_atomic(path, merged)
    return merged


def _reconstructions(path: Path) -> dict[str, torch.Tensor]:
    """The images :func:`attack_reconstruction` saved, checked: two float tensors of one shape
    (n, c, h, w) or (n, h, w), c 1 or 3, small enough to draw."""
    try:
        images = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise RunFileError(f"{path}: not a readable safetensors file ({e})") from None
    for key in ("originals", "reconstructions"):
        t = images.get(key)
        if t is None:
            raise RunFileError(f"{path}: holds no tensor {key!r}")
        fits = t.is_floating_point() and t.dim() in (3, 4) and 0 < len(t) <= 64 and (t.dim() == 3 or t.shape[1] in (1, 3))
        if not fits or max(t.shape[-2:]) > 512 or t.shape != images["originals"].shape:
            raise RunFileError(f"{path}: tensor {key!r} of shape {list(t.shape)} ({t.dtype}) is not a batch of up to 64 images "
                               "(n, c, h, w) or (n, h, w) like the originals")
    return images


def attack_reconstruction(run_dir: str | Path, *, aux_samples: int = 1000, device: str | None = None,
                          weights: Sequence[str | Path] = ()) -> dict[str, Any]:
    run_dir = Path(run_dir)
    _, sim, _ = load_run(run_dir, device=device, weights=weights)
    result = reconstruct(sim, aux_samples=aux_samples)
    save_file({"originals": result.originals.contiguous(), "reconstructions": result.reconstructions.contiguous()}, str(run_dir / RECONSTRUCTIONS))
    client, node, attacker = _smashed_edge(sim)
    aux = min(aux_samples, len(client.shards["train"].features))
    view = (f"{attacker}'s view: it receives {client.name}'s smashed data (the output of {node.name!r}) and holds {aux} "
            f"training inputs passed through {client.name}'s segment; it reconstructs {client.name}'s test inputs")
    return _merge(run_dir, {"reconstruction MSE": result.mse, "reconstruction SSIM": result.ssim}) | {"view": view}


def attack_inversion(run_dir: str | Path, *, victims: int = 64, steps: int = 1000, device: str | None = None,
                     weights: Sequence[str | Path] = ()) -> dict[str, Any]:
    """:func:`invert_smashed` on a finished run folder; the scores join ``attacks.json``."""
    run_dir = Path(run_dir)
    _, sim, _ = load_run(run_dir, device=device, weights=weights)
    result = invert_smashed(sim, victims=victims, steps=steps)
    client, node, attacker = _smashed_edge(sim)
    view = (f"{attacker}'s view: it receives {client.name}'s smashed data (the output of {node.name!r}) and knows only the "
            f"architecture of that segment, no data and no weights; it inverts the smashed data of "
            f"{min(victims, len(client.shards['test'].sample_ids))} "
            f"of {client.name}'s test inputs")
    return _merge(run_dir, {"inversion MSE": result.mse, "inversion SSIM": result.ssim}) | {"view": view}


def complete_labels(sim: Simulation, train: Any, *, per_class: int = 10) -> tuple[ModelCompletionResult, str]:
    """Model completion (Fu et al. 2022) by the party receiving the client's smashed data, which
    computes on it but is given no labels (the server of a U-shaped split): it records the smashed
    data of the training samples in one evaluation pass over them, runs its own trained segment on
    it, knows the labels of ``per_class`` samples per class and infers the others'. Returns the
    result and the attacker's view in one sentence."""
    plan = sim.plan
    _, node, attacker = _smashed_edge(sim)
    if plan.consumer(node.name) is plan.root:
        raise ValueError(f"model completion is the attack of a party that computes on the smashed data but is given no labels "
                         f"(the server of a U-shaped run, a middle hop); here the {attacker} computes the loss, and so "
                         "receives the labels themselves")
    client, node, attacker, ids, smashed = _seen(sim, "train")
    server = sim.parties[attacker]
    middle = server.modules[plan.consumer(node.name).name]
    was_training = middle.training
    middle.eval()
    with torch.no_grad():
        z = middle(smashed.to(server.device)).cpu()
    middle.train(was_training)
    label_of = dict(zip(train.sample_ids.tolist(), train.labels.tolist()))
    truth = torch.tensor([label_of[i] for i in ids.tolist()])
    known = labelled_handful(truth, per_class)
    rest = torch.ones(len(truth), dtype=torch.bool)
    rest[known] = False
    result = model_completion_attack(z[known], truth[known], z[rest], train.num_classes, unknown_y=truth[rest])
    view = (f"{attacker}'s view: it runs its own trained segment on the smashed data of {client.name}'s {len(truth)} training "
            f"samples and knows the labels of {len(known)} of them ({per_class} per class); it infers the labels of the rest")
    return result, view


def attack_completion(run_dir: str | Path, *, per_class: int = 10, device: str | None = None,
                      weights: Sequence[str | Path] = ()) -> dict[str, Any]:
    """:func:`complete_labels` on a finished run folder; the scores join ``attacks.json``."""
    run_dir = Path(run_dir)
    built, sim, _ = load_run(run_dir, device=device, weights=weights)
    try:
        result, view = complete_labels(sim, built.train, per_class=per_class)
    except ValueError as e:
        raise ValueError(f"{e} (this is a {built.config.split.configuration} run)") from None
    found = {"completion accuracy": result.accuracy, "completion majority share": result.majority}
    if result.auc is not None:
        found["completion AUC"] = result.auc
    return _merge(run_dir, found | {"classes": built.train.num_classes}) | {"view": view}


def attack_labels(run_dir: str | Path, *, device: str | None = None, weights: Sequence[str | Path] = ()) -> dict[str, Any]:
    """Train one more epoch in memory (nothing is saved) while the party that receives the label
    owner's gradients records them, then infer the labels."""
    run_dir = Path(run_dir)
    built, sim, _ = load_run(run_dir, device=device, weights=weights)
    receiver = _gradient_receiver(sim)
    recorder = GradientRecorder(receiver)
    sim.transport.observers.append(recorder)
    sim.fit(1)
    labels = dict(zip(built.train.sample_ids.tolist(), built.train.labels.tolist()))
    view = (f"{receiver}'s view: it receives the gradients that {sim.plan.root.role}, which holds the labels, sends back "
            "at the cut during one more epoch of training; it infers the labels of those training samples")
    return _merge(run_dir, label_attack(sim, recorder, labels, built.train.num_classes) | {"classes": built.train.num_classes}) | {"view": view}


def report(run_dir: str | Path) -> Path:
    """Write ``RUN/report.html`` from the run's metrics and whatever attacks were run on it."""
    run_dir = Path(run_dir)
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        raise FileNotFoundError(f"{run_dir} is not a run folder: it has no metrics.json")
    metrics = read_checked(metrics_path, METRICS)
    config = load_config(run_dir / "config.json").to_dict()
    attacks_path = run_dir / "attacks.json"
    attacks = read_checked(attacks_path, ATTACKS) if attacks_path.is_file() else {}
    images = _reconstructions(run_dir / RECONSTRUCTIONS) if (run_dir / RECONSTRUCTIONS).is_file() else {}
    a1 = config["privacy"]["nopeek_a1"]
    name = f"NoPeek a1={a1:g}" if a1 else "SplitNN"
    epochs = [{k: e[k] for k in ("epoch", "test_accuracy", "dcor") if k in e} for e in metrics["epochs"]]
    classes = attacks.pop("classes", None)
    evidence = RunEvidence(name, epochs, attacks, images.get("originals"), images.get("reconstructions"),
                           config=config, classes=classes if isinstance(classes, int) else None)
    notes = [f"Run folder {run_dir.name}: {config['split']['configuration']} split of {config['model']['name']} on "
             f"{config['data']['name']}." + ("" if attacks else " No attack has been run on it yet (splitlearn attack ...).")]
    return write_report(run_dir / "report.html", runs=[evidence], config=config, title=f"Leakage report: {run_dir.name}", notes=notes)
