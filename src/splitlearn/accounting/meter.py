"""FLOPs and saved activations of every segment, measured through the parties' ``compute`` hook."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from itertools import chain

import torch
from torch.autograd.graph import saved_tensors_hooks
from torch.nn.modules.module import register_module_forward_pre_hook
from torch.utils.flop_counter import FlopCounterMode

from splitlearn.split.plan import Plan

__all__ = ["PHASES", "FlopMeter"]

PHASES = ("forward", "backward", "eval")
_IDLE = nullcontext()


class FlopMeter:
    """A ``compute(phase, node)`` hook for :class:`~splitlearn.split.party.Party` and
    :class:`~splitlearn.split.simulation.Simulation` that measures each node (segment) of a plan.

    ``flops[node][phase]``: FLOPs counted by :class:`~torch.utils.flop_counter.FlopCounterMode`
    (matrix products, convolutions, attention; element-wise ops, norms and the loss count 0).
    Phases: ``forward`` and ``backward`` of training steps, ``eval`` for forwards run without grad.

    ``saved[node]``: the most bytes one training forward of the node saved for backward, counted
    once per storage. Module parameters and buffers are excluded (they are state, not activations);
    so are the node's output unless autograd saved it, temporaries freed during the forward, the
    loss (computed outside the hook) and gradients.

    Node names are unique in a plan and each node has one role, so :meth:`summary` attributes by
    role. ``enabled`` may be switched at any time; while off the hook is a shared no-op context.
    Parties pass the batch size, so each distinct (phase, node, batch size) is counted once and
    reused: counting dispatches every operation through Python, reusing costs nothing.
    """

    def __init__(self, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.flops: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(PHASES, 0))
        self.saved: dict[str, int] = defaultdict(int)
        self._counter = FlopCounterMode(display=False)
        self._known: dict[tuple[str, str, int], int] = {}  # (phase, node, batch) -> FLOPs

    def __call__(self, phase: str, node: str, batch: int | None = None) -> AbstractContextManager:
        """Measure one computation. Counts depend only on shapes, so with ``batch`` (the number of
        samples) each (phase, node, batch) is measured once and then added up without counting."""
        if not self.enabled:
            return _IDLE
        if phase == "forward" and not torch.is_grad_enabled():
            phase = "eval"
        known = self._known.get((phase, node, batch)) if batch is not None else None
        if known is not None:
            self.flops[node][phase] += known
            return _IDLE
        return self._measure(phase, node, batch)

    @contextmanager
    def _measure(self, phase: str, node: str, batch: int | None) -> Iterator[None]:
        with self._counter:
            if phase == "forward":
                with _saved_storages() as saved:
                    yield
                self.saved[node] = max(self.saved[node], sum(saved.values()))
            else:
                yield
        flops = self._counter.get_total_flops()
        self.flops[node][phase] += flops
        if batch is not None:
            self._known[(phase, node, batch)] = flops

    def summary(self, plan: Plan, *, parties: Mapping[str, int] | None = None) -> dict:
        """FLOPs by node and by role (per phase and ``total``), their sum, and ``mean_per_party``:
        each role's FLOPs over the number of parties playing it (``parties``: role -> count,
        default 1; round-robin clients all play one role)."""
        by_role = {role: dict.fromkeys((*PHASES, "total"), 0) for role in plan.roles}
        for node, phases in self.flops.items():
            totals = by_role[plan.node(node).role]
            for phase, n in phases.items():
                totals[phase] += n
                totals["total"] += n
        parties = parties or {}
        return {
            "by_node": {node: dict(phases) for node, phases in self.flops.items()},
            "by_role": by_role,
            "mean_per_party": {
                role: {k: n / parties.get(role, 1) for k, n in totals.items()} for role, totals in by_role.items()
            },
            "total": sum(t["total"] for t in by_role.values()),
        }


@contextmanager
def _saved_storages() -> Iterator[dict[int, int]]:
    """Yield a dict that, once the block exits, maps the storage of every tensor autograd saved in
    the block to its bytes, less the parameters and buffers of the modules called in it."""
    saved: dict[int, int] = {}
    state: set[int] = set()

    def pack(t: torch.Tensor) -> torch.Tensor:
        storage = t.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return t

    def note_state(module, args) -> None:
        tensors = chain(module.parameters(recurse=False), module.buffers(recurse=False))
        state.update(t.untyped_storage().data_ptr() for t in tensors)

    handle = register_module_forward_pre_hook(note_state)
    try:
        with saved_tensors_hooks(pack, lambda t: t):
            yield saved
    finally:
        handle.remove()
    for ptr in state:
        saved.pop(ptr, None)
