"""What a party holds besides its segments: its data shards, its evaluation totals, the state of
the step in progress, and where it keeps its checkpoints."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from splitlearn.split.messages import (
    ProtocolError,
)

__all__ = ["CheckpointStore", "EvalTotals", "Penalty", "Shard", "StepState"]

Penalty = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""A local loss term of a data node, from its input (raw features) and its output (smashed data)."""


class CheckpointStore(Protocol):
    """Where a party keeps its state after each step it finishes (see :mod:`splitlearn.checkpoint`)."""

    def save(self, step: int, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """Keep ``tensors`` and JSON ``meta`` as the state after ``step``, durably and atomically."""

    def load(self, at_most: int | None = None) -> tuple[int, dict[str, torch.Tensor], dict[str, Any]] | None:
        """The newest state saved at or before step ``at_most`` (any step if None), or None."""

    def discard_after(self, step: int) -> None:
        """Forget every state saved after ``step``."""


@dataclass
class Shard:
    """The rows of one split (train/test) that a party holds, addressed by sample id."""

    sample_ids: torch.Tensor
    features: torch.Tensor | None = None
    labels: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.sample_ids)
        if self.features is not None and len(self.features) != n:
            raise ValueError(f"shard has {n} sample ids but {len(self.features)} feature rows")
        for task, y in self.labels.items():
            if len(y) != n:
                raise ValueError(f"shard has {n} sample ids but {len(y)} labels for task {task!r}")
        self._sorted, self._order = torch.sort(self.sample_ids)
        if n > 1 and bool((self._sorted[1:] == self._sorted[:-1]).any()):
            raise ValueError("shard sample ids must be unique")

    def rows(self, ids: torch.Tensor) -> torch.Tensor:
        """Row positions of ``ids``; ``ProtocolError`` naming ids this shard does not hold."""
        pos = torch.searchsorted(self._sorted, ids).clamp(max=max(len(self._sorted) - 1, 0))
        found = self._sorted[pos] == ids if len(self._sorted) else torch.zeros_like(ids, dtype=torch.bool)
        if not bool(found.all()):
            missing = ids[~found][:5].tolist()
            raise ProtocolError(f"asked for {int((~found).sum())} sample ids this party does not hold, e.g. {missing}")
        return self._order[pos]


@dataclass
class EvalTotals:
    """Sufficient statistics of evaluation for one task, kept by the label owner."""

    correct: int = 0
    count: int = 0
    loss_sum: float = 0.0

    @property
    def accuracy(self) -> float:
        return self.correct / self.count if self.count else float("nan")

    @property
    def loss(self) -> float:
        return self.loss_sum / self.count if self.count else float("nan")


@dataclass
class StepState:
    step: int
    mode: str
    split: str
    sample_ids: torch.Tensor | None = None
    peers: dict[str, str] = field(default_factory=dict)  # role -> party playing it this step
    leaves: dict[str, dict[str, torch.Tensor]] = field(default_factory=dict)  # node -> src -> leaf
    senders: dict[str, str] = field(default_factory=dict)  # src node -> party that sent its output
    grad_from: dict[str, str] = field(default_factory=dict)  # my node -> party owing its gradient
    outputs: dict[str, torch.Tensor | tuple[torch.Tensor, ...]] = field(default_factory=dict)
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    remaining: set[str] = field(default_factory=set)
    outputs_expected: int = 0
    penalties: dict[str, torch.Tensor] = field(default_factory=dict)
    checkpoint: bool = True
    received: list[tuple[str, torch.Tensor]] = field(default_factory=list)  # (party, floating tensor it sent)
    buffers: list[torch.Tensor] | None = None  # train: the segments' buffers before the step (forward updates them)


