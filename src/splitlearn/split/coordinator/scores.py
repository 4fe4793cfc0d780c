"""Evaluation passes, and the scores and leakage the label owners and data parties report."""

from __future__ import annotations

import math
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

import torch

from splitlearn.split.coordinator.schedule import Batch
from splitlearn.split.messages import ProtocolError, ScoreRequest, Scores
from splitlearn.split.transport import PartyLost

__all__ = ["Scoring"]


def _as_float(value: int | float) -> float:
    """``value`` as a float; an int too large for one is infinite."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


@dataclass(frozen=True)
class Asked:
    """The ScoreRequests out: for which pass (split, step), to whom, over how many samples."""

    split: str
    step: int
    parties: frozenset[str]
    samples: int
    leakage: frozenset[str] = frozenset()  # the data parties asked for DCOR(X, Z) too




class Scoring:
    """Evaluation and reported scores of :class:`~splitlearn.split.coordinator.Coordinator` (a mixin)."""

    def evaluate(self, split: str = "test", *, batch_size: int = 512, ask: Collection[str] = (),
                 leakage_from: Collection[str] = (), leakage_batch_size: int = 0,
                 client: str | None = None) -> dict[str, dict[str, dict[str, int | float]]]:
        """Run ``split`` forward through the protocol; the label owner scores it locally. Then ask
        each party in ``ask`` (label owners that run elsewhere) for its totals over the pass;
        return them: party -> task -> ``{"count", "correct", "loss_sum"}`` (no tasks from a party
        that keeps its scores). Each party of ``leakage_from`` (data parties that run elsewhere) is
        asked for the held-out DCOR(X, Z) of its data segments at ``leakage_batch_size`` too; what
        they report is in :attr:`leakage_reported`.

        In round robin the current holder of the shared segments evaluates on its own copy, or,
        with ``client``, that client on its own data (the segments are relayed to it first). A
        lost party restarts the evaluation from its first batch (scores are reset by the roll back).
        """
        while True:
            if client is not None and client != self.holder:
                if client not in self.clients:
                    raise ValueError(f"{client!r} is not a round-robin client here; the clients are {self.clients}")
                self.relay_to(client)
            ids = torch.sort(self.manifests[self.holder][split]).values if self.group_role is not None else self.aligned[split]
            bindings = self._bindings(self.holder)
            try:
                for b in self._batches(ids, shuffle_key=None, batch_size=batch_size):
                    self.run_step(Batch(bindings, b), mode="eval", split=split)
                return self._collect_scores(split, ask, len(ids), leakage_from, leakage_batch_size)
            except PartyLost as lost:
                self.recover(lost)

    def _collect_scores(self, split: str, ask: Collection[str], samples: int, leakage_from: Collection[str] = (),
                        leakage_batch_size: int = 0) -> dict[str, dict[str, dict[str, int | float]]]:
        leak = frozenset(leakage_from) if leakage_batch_size > 0 else frozenset()
        parties = set(ask) | leak
        self._asked, self._scores, self.leakage_reported = Asked(split, self.step, frozenset(parties), samples, leak), {}, {}
        try:
            for party in sorted(parties):
                self.transport.send(ScoreRequest(self.name, party, self.step, split=split,
                                                 leakage_batch_size=leakage_batch_size if party in leak else 0))
            self.transport.run_until(lambda: self._scores.keys() >= parties)
            return {p: s for p, s in self._scores.items() if p in ask}
        finally:
            self._asked = None

    def _check_scores(self, msg: Scores) -> dict[str, dict[str, int | float]]:
        """The totals of ``msg``, refused unless they are counts and a loss sum for tasks of this plan
        (and the leakage asked for, values of DCOR for the sender's data nodes)."""
        tasks, samples = {h.task for h in self.plan.root.heads}, self._asked.samples
        meta = dict(msg.meta)
        if "leakage" in meta:
            self.leakage_reported[msg.sender] = self._check_leakage(msg.sender, meta.pop("leakage"))
        for task, t in meta.items():
            ok = (task in tasks and isinstance(t, dict) and set(t) == {"count", "correct", "loss_sum"}
                  and t["count"] == samples and type(t["count"]) is int  # every sample of the pass, scored once
                  and type(t["correct"]) is int and 0 <= t["correct"] <= samples
                  and type(t["loss_sum"]) in (int, float) and 0 <= _as_float(t["loss_sum"]) < math.inf)
            if not ok:
                raise ProtocolError(f"coordinator: {msg.sender} reported scores that are not totals of a task here "
                                    f"over the {samples} samples of the pass: {task!r}: {t!r}")
        return meta

    def _check_leakage(self, sender: str, leak: Any) -> dict[str, Any]:
        role = self.group_role if sender in self.clients else sender
        nodes = {n.name for n in self.plan.nodes_of(role) if not n.inputs} if role in self.plan.roles else set()
        dcor = leak.get("dcor") if isinstance(leak, dict) else None
        ok = (sender in self._asked.leakage and isinstance(dcor, dict) and set(leak) == {"dcor", "collapsed"}
              and type(leak["collapsed"]) is bool and dcor and set(dcor) <= nodes
              and all(type(v) in (int, float) and 0 <= v <= 1 for v in dcor.values()))
        if not ok:
            raise ProtocolError(f"coordinator: {sender} reported leakage that is not DCOR values in [0, 1] of its data nodes, "
                                f"as asked: {leak!r}"[:1000])
        return leak

