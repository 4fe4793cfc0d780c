"""Label inference by model completion (Fu et al. 2022, "Label Inference Attacks Against Vertical
Federated Learning", USENIX Security '22; the passive attack).

Threat model: a party without the labels that holds what a trained bottom model makes of each
sample: a feature-holding client in a vertical split (its own trained bottom model and its own
features), or the server of a U-shaped split (the smashed data it receives and the outputs of
its own middle segment). It also knows the labels of a handful of samples, for example 10 per
class: its own records, public ones, or a few it bought. It stacks a small top model on the
bottom outputs, fits that top model to the labelled handful and predicts the labels of every
other sample it holds. It never sees a gradient or the label owner's layers. Success is the
accuracy of the inferred labels on the samples it did not know, against chance ``1 / classes``
(and the share of the largest class, which a constant guess scores); for binary tasks also the
AUC of the predicted probability of class 1.

Fu et al. refine the completed model with MixMatch on the unlabelled samples; this is the plain
supervised variant, so it is a lower bound on what the attack can do.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ModelCompletionResult", "complete_model", "labelled_handful", "model_completion_attack"]


def labelled_handful(labels: torch.Tensor, per_class: int, *, seed: int = 0) -> torch.Tensor:
    """Indices of ``per_class`` samples of every class present (all of a class that has fewer),
    drawn with ``seed``: the few labels the attacker knows."""
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ValueError(f"per_class must be a positive int, got {per_class!r}")
    g = torch.Generator().manual_seed(seed)
    picked = []
    for c in labels.unique().tolist():
        rows = (labels == c).nonzero().flatten()
        picked.append(rows[torch.randperm(len(rows), generator=g)[:per_class]])
    return torch.sort(torch.cat(picked)).values


def complete_model(
    known_z: torch.Tensor,
    known_y: torch.Tensor,
    num_classes: int,
    *,
    hidden: int = 64,
    epochs: int = 300,
    lr: float = 1e-2,
    weight_decay: float = 1e-3,
    center: torch.Tensor | None = None,
    scale: torch.Tensor | None = None,
    seed: int = 0,
) -> nn.Module:
    """Fit a top model (standardisation, then an MLP with one hidden layer, or a linear layer
    if ``hidden=0``) on the bottom outputs of the labelled handful, full batch with Adam.

    ``center`` and ``scale`` standardise the bottom outputs; the attacker may take them from
    every sample it holds, labelled or not (default: from ``known_z``).
    """
    if len(known_z) != len(known_y) or len(known_z) < 2:
        raise ValueError(f"need at least 2 labelled samples with as many bottom outputs as labels, got {len(known_z)} and {len(known_y)}")
    if not 2 <= num_classes or int(known_y.min()) < 0 or int(known_y.max()) >= num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}) with num_classes >= 2")
    z = known_z.detach().flatten(1).float()
    center = z.mean(0) if center is None else center.flatten().float()
    scale = z.std(0) if scale is None else scale.flatten().float()
    scale = torch.where(scale > 1e-8, scale, torch.ones_like(scale))
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, caller's RNG left alone
        torch.manual_seed(seed)
        head = (nn.Sequential(nn.Linear(z.shape[1], hidden), nn.ReLU(), nn.Linear(hidden, num_classes)) if hidden
                else nn.Linear(z.shape[1], num_classes))
    top = nn.Sequential(_Standardise(center, scale), head).to(z.device)
    opt = torch.optim.Adam(top.parameters(), lr=lr, weight_decay=weight_decay)
    y = known_y.to(z.device)
    for _ in range(epochs):
        loss = F.cross_entropy(top(z), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return top.eval()


class _Standardise(nn.Module):
    def __init__(self, center: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("center", center.clone())
        self.register_buffer("scale", scale.clone())

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return (z.flatten(1) - self.center) / self.scale


@dataclass(frozen=True)
class ModelCompletionResult:
    predictions: torch.Tensor  # inferred label of every attacked sample
    probabilities: torch.Tensor  # (n, classes)
    accuracy: float  # NaN without the true labels
    chance: float  # 1 / classes
    majority: float  # share of the largest class among the attacked samples (NaN without labels)
    auc: float | None  # binary tasks: AUC of the probability of class 1; None otherwise
    known: int  # labelled samples the attacker used


def model_completion_attack(
    known_z: torch.Tensor,
    known_y: torch.Tensor,
    unknown_z: torch.Tensor,
    num_classes: int,
    *,
    unknown_y: torch.Tensor | None = None,
    **top_kw,
) -> ModelCompletionResult:
    """Complete the bottom model with a top model fitted on the labelled handful
    (:func:`complete_model`, standardised with the statistics of all the bottom outputs the
    attacker holds) and infer the labels of ``unknown_z``; scored when ``unknown_y`` is given."""
    everything = torch.cat([known_z.detach(), unknown_z.detach()]).flatten(1).float()
    top_kw.setdefault("center", everything.mean(0))
    top_kw.setdefault("scale", everything.std(0))
    top = complete_model(known_z, known_y, num_classes, **top_kw)
    with torch.no_grad():
        probabilities = F.softmax(top(unknown_z.detach().float()), dim=1).cpu()
    predictions = probabilities.argmax(1)
    accuracy = majority = float("nan")
    auc = None
    if unknown_y is not None:
        truth = unknown_y.cpu()
        if truth.shape != predictions.shape:
            raise ValueError(f"unknown_y has shape {tuple(truth.shape)}, expected {tuple(predictions.shape)}")
        accuracy = float((predictions == truth).double().mean())
        majority = float(torch.bincount(truth, minlength=num_classes).max()) / len(truth)
        if num_classes == 2 and len(truth.unique()) == 2:
            from sklearn.metrics import roc_auc_score  # here: sklearn takes long to import

            auc = float(roc_auc_score(truth.numpy(), probabilities[:, 1].double().numpy()))
    return ModelCompletionResult(predictions, probabilities, accuracy, 1 / num_classes, majority, auc, len(known_y))

