"""Fault tolerance: commits, roll backs of lost parties, and a restart from the saved position."""

from __future__ import annotations

from splitlearn.split.messages import Abort
from splitlearn.split.transport import PartyLost

__all__ = ["Recovery"]


class Recovery:
    """Commits, roll back and restart of :class:`~splitlearn.split.coordinator.Coordinator` (a mixin)."""

    # -- fault tolerance -----------------------------------------------------------------------

    def _commit(self, step: int) -> None:
        """Every party has checkpointed after ``step``: training goes on from there after a loss."""
        self.committed = step
        self._committed_holder = self.holder
        self._cursor = (self.epoch, self.next_batch)
        self._save()

    def _save(self) -> None:
        if self.on_commit is not None:
            self.on_commit()

    def recover(self, lost: PartyLost) -> None:
        """Roll back the step ``lost`` interrupted on every connected party; the lost party is
        rolled back when a step needs it again. Re-raises ``lost`` when ``rejoin`` is not set."""
        if self.rejoin is None:
            raise lost
        while True:
            self._heard(lost)
            self.absent.setdefault(lost.party, self.committed)
            try:
                self._abort([p for p in self.parties if p not in self.absent], self.committed)
                return
            except PartyLost as again:
                lost = again

    def _heard(self, lost: PartyLost) -> None:
        if self.on_lost is not None:
            self.on_lost(lost)

    def _abort(self, parties: list[str], restore_to: int) -> None:
        self.step += 1
        self.floor = self.step
        self._save()  # the step ids issued so far, so a restarted coordinator goes on above them
        self._aborted = set()
        self._done = {}  # steps in flight are void
        self.holder = self._committed_holder
        for party in parties:
            self.transport.send(Abort(self.name, party, self.step, restore_to=restore_to))
        self.transport.run_until(lambda: self._aborted >= set(parties))
        self._progressed()

    def _progressed(self) -> None:
        if self.on_progress is not None:
            self.on_progress()

    def _await(self, parties: list[str]) -> None:
        """Wait for the lost parties among ``parties`` to be back, and roll each back."""
        while back := [p for p in dict.fromkeys(parties) if p in self.absent]:
            party = back[0]
            self.rejoin(party)
            try:
                self._abort([party], self.absent[party])
                del self.absent[party]
            except PartyLost as lost:
                self._heard(lost)
                self.absent.setdefault(lost.party, self.committed)

    def state_dict(self) -> dict:
        """Where training stands, as JSON: enough to go on after a restart of this process."""
        return {"step": self.step, "committed": self.committed, "holder": self._committed_holder,
                "epoch": self._cursor[0], "next_batch": self._cursor[1]}

    def load_state_dict(self, state: dict) -> None:
        """Go on from :meth:`state_dict`; every party must then be rolled back to ``committed``
        (:meth:`restart`)."""
        if self.group_role is not None and state["holder"] not in self.clients:
            raise ValueError(f"checkpoint names holder {state['holder']!r}, not one of the clients")
        self.committed, self.step = int(state["committed"]), int(state["step"])
        if self.step < self.committed:
            raise ValueError(f"checkpoint step {self.step} is before its committed step {self.committed}")
        self.holder = self._committed_holder = state["holder"]
        self.epoch, self.next_batch = int(state["epoch"]), int(state["next_batch"])
        self._cursor = (self.epoch, self.next_batch)

    def restart(self) -> None:
        """After :meth:`load_state_dict` in a new process: roll every party back to the last
        committed step (parties that finished a later step before the crash forget it)."""
        self.floor = 0
        self.absent = {}
        while True:
            try:
                self._abort(self.parties, self.committed)
                return
            except PartyLost as lost:
                self._heard(lost)
                self.rejoin(lost.party)
