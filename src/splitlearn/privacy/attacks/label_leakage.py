"""Label leakage from cut gradients (Li et al., 2021, "Label Leakage and Protection in Two-party
Split Learning"), and a gradient-noise defence.

Threat model: an honest-but-curious party that does not hold the labels but receives the gradient
at its cut (the server in a U-shaped split, a feature-holding client in a vertical split). It
follows the protocol and only looks at the per-sample rows of the gradients it is sent; it knows
which sample ids each step carried, but no label.

- *Norm attack*: for binary tasks trained with cross-entropy, the per-sample gradient norm is
  larger for the minority class, so the norm itself ranks samples by label.
- *Direction attack*: with a linear layer after the cut, gradients of the two classes point in
  opposite directions within a step. The attacker keeps a reference direction, follows it from
  step to step (the model moves slowly), and scores each sample by its cosine with it.

Leakage of a score is reported as ``max(AUC, 1 - AUC)``: an AUC of 0.02 leaks as much as 0.98.
For more than two classes the attacker clusters each step's gradients by direction; the leak is
the accuracy of the best cluster-to-label matching.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment

from splitlearn.split.compression import as_tensor
from splitlearn.split.messages import Gradient, Message, StartStep

__all__ = ["GradientNoise", "GradientRecorder", "leak_auc", "norm_scores", "direction_scores", "cluster_accuracy"]


@dataclass
class GradientRecorder:
    """Transport observer: what ``attacker`` sees, namely the gradients sent to it and the sample
    ids of each step it takes part in (decoded, when they travel compressed). Attach with
    ``transport.observers.append(recorder)``."""

    attacker: str
    steps: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)  # (ids, per-sample grads)
    _ids: dict[int, torch.Tensor] = field(default_factory=dict)

    def __call__(self, message: Message) -> None:
        if message.receiver != self.attacker:
            return
        if isinstance(message, StartStep) and message.mode == "train":
            self._ids[message.step] = message.sample_ids
        elif isinstance(message, Gradient) and message.step in self._ids:
            self.steps.append((self._ids.pop(message.step), as_tensor(message.tensor).detach().flatten(1).cpu()))

    def gradients(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All recorded (sample ids, per-sample gradients), in step order."""
        if not self.steps:
            raise ValueError(f"{self.attacker} received no gradients: is it a party that receives cut gradients?")
        ids, grads = zip(*self.steps)
        return torch.cat(ids), torch.cat(grads)


def leak_auc(scores: torch.Tensor, labels: torch.Tensor) -> float:
    """``max(AUC, 1 - AUC)`` of ``scores`` separating binary ``labels``."""
    labels = labels.cpu().numpy()
    if len(np.unique(labels)) != 2:
        raise ValueError(f"leak AUC needs binary labels with both classes present, got classes {np.unique(labels)}")
    from sklearn.metrics import roc_auc_score  # here: sklearn takes long to import

    auc = roc_auc_score(labels, scores.double().cpu().numpy())
    return float(max(auc, 1 - auc))


def norm_scores(recorder: GradientRecorder) -> tuple[torch.Tensor, torch.Tensor]:
    """(sample ids, per-sample gradient norms)."""
    ids, grads = recorder.gradients()
    return ids, grads.norm(dim=1)


def direction_scores(recorder: GradientRecorder) -> tuple[torch.Tensor, torch.Tensor]:
    """(sample ids, cosine of each gradient with a reference class direction tracked over steps)."""
    if not recorder.steps:
        recorder.gradients()  # raises the clear error
    ids, scores, reference = [], [], None
    for step_ids, grads in recorder.steps:
        unit = F.normalize(grads.double(), dim=1)
        if reference is None:
            reference = unit[unit.norm(dim=1).argmax()]
        else:
            # The sample of this step most aligned with the previous reference becomes the new one.
            reference = unit[(unit @ reference).argmax()]
        ids.append(step_ids)
        scores.append(unit @ reference)
    return torch.cat(ids), torch.cat(scores)


def cluster_accuracy(recorder: GradientRecorder, labels_of: Callable[[torch.Tensor], torch.Tensor], num_classes: int, *, seed: int = 0) -> float:
    """Multi-class leak: k-means on unit gradients of each step, best cluster-to-label matching
    (Hungarian), accuracy over all recorded samples."""
    from sklearn.cluster import KMeans

    correct = total = 0
    for step_ids, grads in recorder.steps:
        y = labels_of(step_ids).cpu().numpy()
        k = min(num_classes, len(y))
        unit = F.normalize(grads.double(), dim=1).numpy()
        clusters = KMeans(n_clusters=k, n_init=3, random_state=seed).fit_predict(unit)
        table = np.zeros((k, num_classes))
        np.add.at(table, (clusters, y), 1)
        rows, cols = linear_sum_assignment(-table)
        correct += int(table[rows, cols].sum())
        total += len(y)
    if not total:
        recorder.gradients()
    return correct / total


def plain_gradient(message: Gradient, hook: str) -> torch.Tensor:
    """The tensor a gradient message carries, for a hook that changes its values; ``TypeError``
    saying where the hook belongs if a codec has already encoded it."""
    g = message.tensor
    if not isinstance(g, torch.Tensor):
        raise TypeError(f"{hook} got an encoded gradient ({type(g).__name__}): put it before the codec, "
                        f"as in Chain({hook}(...), Compressor(...))")
    return g


def step_noise(seed: int, step: int, like: torch.Tensor) -> torch.Tensor:
    """Standard normal noise shaped like ``like``, drawn from ``seed`` and the step id: the same
    for a step run again after a roll back."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
    return torch.randn(like.shape, generator=generator, dtype=like.dtype).to(like.device)


@dataclass(frozen=True)
class GradientNoise:
    """Defence: the label owner adds Gaussian noise to every gradient it returns across the cut.

    Each row gets isotropic noise with standard deviation ``scale`` times the mean per-sample
    gradient norm of the batch divided by sqrt(dim), so the noise norm is about ``scale`` times
    a typical gradient norm whatever the layer width. Use as an ``outbox`` of the label owner.
    The noise of a step is drawn from ``seed`` and the step id, so a step run again after a roll
    back gets the same noise; without ``seed`` (the default) the seed is this party's own secret,
    drawn from the operating system's randomness: a receiver who knew it could draw the noise
    again and subtract it.
    """

    scale: float
    seed: int | None = field(default=None, repr=False)  # repr: a secret seed stays out of logs

    def __post_init__(self) -> None:
        if not self.scale >= 0:
            raise ValueError(f"noise scale must be >= 0, got {self.scale}")
        if self.seed is None:
            object.__setattr__(self, "seed", secrets.randbits(40))

    def __call__(self, message: Message) -> Message:
        if not isinstance(message, Gradient) or self.scale == 0:
            return message
        g = plain_gradient(message, "GradientNoise")
        flat = g.flatten(1)
        sigma = self.scale * flat.norm(dim=1).mean() / flat.shape[1] ** 0.5
        noise = step_noise(self.seed, message.step, g) * sigma
        return Gradient(message.sender, message.receiver, message.step, src=message.src, dst=message.dst, tensor=g + noise)
