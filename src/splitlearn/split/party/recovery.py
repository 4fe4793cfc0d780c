"""How a party hands its segments on (round-robin relay), checkpoints after a step, resumes, and
is rolled back by the coordinator."""

from __future__ import annotations

import torch

from splitlearn.checkpoint import CheckpointError
from splitlearn.split.messages import (
    Abort,
    ProtocolError,
    RelayRequest,
    StepDone,
    Weights,
)
from splitlearn.split.party.checks import all_finite
from splitlearn.split.state import pack_state, unpack_state

__all__ = ["Recovery"]


class Recovery:
    """Relay, checkpoints and roll back of :class:`~splitlearn.split.party.Party` (a mixin)."""

    # -- round-robin relay ---------------------------------------------------------------------

    def _relay(self, msg: RelayRequest) -> None:
        if msg.sender != self.plan.coordinator or self._st is not None:
            raise ProtocolError(f"{self.name}: relay request from {msg.sender} refused")
        if self.modules is None:
            raise ProtocolError(f"{self.name} was asked to relay segments it does not hold")
        state, meta = pack_state(self.modules, self.optimizer)
        receiver = msg.destination if msg.route == "peer" else self.plan.relay_role
        if receiver is None:
            raise ProtocolError(f"{self.name}: this plan has no server to relay weights through")
        self.modules = self.optimizer = None  # the segments now live with the next client only
        self._commit(msg.step)
        self._send(Weights(self.name, receiver, msg.step, destination=msg.destination, state=state, meta=meta))

    def _on_weights(self, msg: Weights) -> None:
        if msg.destination != self.name:
            # Only in transit here: pass it on unchanged, keep nothing.
            self._send(Weights(self.name, msg.destination, msg.step, destination=msg.destination, state=msg.state, meta=msg.meta))
            return
        if self.make_modules is None:
            raise ProtocolError(f"{self.name} cannot hold relayed segments")
        if self.modules is not None or msg.step <= self.committed:
            held = "it holds its segments already" if self.modules is not None else f"they would replace its checkpoint of step {self.committed}"
            raise ProtocolError(f"{self.name}: relayed weights of step {msg.step} from {msg.sender} refused: {held}")
        bad = next((k for k, t in msg.state.items() if not all_finite([t])), None)
        if bad is not None:
            self._reject(msg, f"relayed weights of step {msg.step} from {msg.sender} hold NaN or Inf in {bad!r}")
        modules = self.make_modules()
        self._install(modules)
        unpack_state(msg.state, msg.meta, self.modules, self.optimizer)
        self._commit(msg.step)
        self._send(StepDone(self.name, self.plan.coordinator, msg.step, tag="relay"))

    # -- checkpoints and roll back --------------------------------------------------------------

    def _commit(self, step: int) -> None:
        self.committed = step
        if self.checkpoints is None or not self.nodes:
            return
        tensors, meta = self.state()
        self.checkpoints.save(step, {k: v.detach().cpu().contiguous() for k, v in tensors.items()},
                              {"holds": self.modules is not None, "state": meta})

    def resume(self) -> int:
        """Load the newest checkpoint, or save the present state as step 0 when there is none
        (a fresh start); return the step it stands for. Needs ``checkpoints``.

        A party resumed from a checkpoint is :attr:`fenced`: it drops every message until the
        coordinator rolls it back (``Abort``), since the others may have gone on without it, or
        have been rolled back behind it, meanwhile."""
        if self.checkpoints is None:
            raise RuntimeError(f"party {self.name!r} has no checkpoint store")
        found = self.checkpoints.load()
        if found is None:
            self._commit(0)
            return 0
        self.fenced = True
        return self._load(found, None)

    def _restore(self, at_most: int | None) -> int:
        self._st = self._next = None
        self.eval_totals.clear()
        if not self.nodes:
            return 0
        found = None if self.checkpoints is None else self.checkpoints.load(at_most)
        if found is None:
            raise ProtocolError(f"{self.name} holds no checkpoint at or before step {at_most} to roll back to")
        return self._load(found, at_most)

    def _load(self, found: tuple[int, dict[str, torch.Tensor], dict], at_most: int | None) -> int:
        """Install checkpoint ``found``; forget later checkpoints, losses and penalties."""
        step, tensors, meta = found
        holds = meta.get("holds") if isinstance(meta, dict) else None
        if not isinstance(holds, bool):
            raise CheckpointError(f"{self.name}'s checkpoint of step {step} does not say whether it holds segments")
        self.committed = step
        if holds:
            if self.modules is None and self.make_modules is None:
                raise ProtocolError(f"{self.name} cannot rebuild its segments to restore step {step}")
            self._install(self.make_modules() if self.modules is None else self.modules)  # a fresh optimiser
            try:
                unpack_state(tensors, meta.get("state"), self.modules, self.optimizer)
            except ValueError as e:
                raise CheckpointError(f"{self.name}'s checkpoint of step {step}: {e}") from None
        else:
            self.modules = self.optimizer = None
        if at_most is not None:
            self.checkpoints.discard_after(at_most)
        self.losses = [(s, v) for s, v in self.losses if s <= step]
        self.penalty_log = [e for e in self.penalty_log if e[0] <= step]
        return step

    def _abort(self, msg: Abort) -> None:
        if msg.sender != self.plan.coordinator:
            raise ProtocolError(f"{self.name}: abort from {msg.sender}, not the coordinator")
        self._restore(msg.restore_to)
        self.floor, self.fenced = msg.step, False
        self._send(StepDone(self.name, self.plan.coordinator, msg.step, tag="abort"))

    def state(self) -> tuple[dict[str, torch.Tensor], dict]:
        """This party's segments and optimiser state, for a checkpoint on its own disk."""
        if self.modules is None:
            return {}, {}
        return pack_state(self.modules, self.optimizer)
