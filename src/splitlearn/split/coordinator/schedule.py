"""The schedule: batches of sample ids in a seeded order, and whether steps may be pipelined."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from splitlearn.split.plan import Plan

__all__ = ["Batch", "pipelinable", "shuffled_batches"]


def shuffled_batches(ids: torch.Tensor, batch_size: int, *, key: tuple[int, ...] | None) -> list[torch.Tensor]:
    """``ids`` in batches, shuffled by a generator seeded from the ints in ``key`` (None: in order).
    The same key gives the same order in every process and for every method compared."""
    if key is not None:
        seed = sum(v * 1_000_003**i for i, v in enumerate(key)) % 2**62
        ids = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))]
    return list(torch.split(ids, batch_size))


def pipelinable(plan: Plan) -> bool:
    """Whether a party may start step n + 1 as soon as it has finished step n itself.

    A party that starts a step sends at once: its smashed data, or its labels. Each receiver must
    have finished step n by then, whatever the order of delivery. It has if it holds a single
    segment: it returns the gradient for that segment last, just before it finishes (and the
    sender needed that gradient to finish). A party holding no segment (labels only) finishes as
    soon as it has sent its labels, so it would send the next step's labels too early.
    """
    if not all(plan.nodes_of(role) for role in plan.roles):
        return False
    receivers = set()  # roles that another role's start of a step sends to
    for node in plan.nodes:
        consumer = plan.consumer(node.name)
        if not node.inputs and consumer is not None and consumer.role != node.role:
            receivers.add(consumer.role)
    receivers |= {plan.root.role for head in plan.root.heads if head.label_role != plan.root.role}
    return all(len(plan.nodes_of(role)) == 1 for role in receivers)



@dataclass(frozen=True)
class Batch:
    """One step of the schedule: which party plays each role, and the sample ids of the batch."""

    bindings: dict[str, str]
    sample_ids: torch.Tensor


