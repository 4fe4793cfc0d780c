"""The coordinator itself: manifests, the steps it issues and waits for, relays and epochs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from splitlearn.split.coordinator.recovery import Recovery
from splitlearn.split.coordinator.schedule import Batch, pipelinable, shuffled_batches
from splitlearn.split.coordinator.scores import Asked, Scoring
from splitlearn.split.messages import Manifest, Message, ProtocolError, RelayRequest, Scores, StartStep, StepDone
from splitlearn.split.plan import Plan
from splitlearn.split.transport import PartyLost, Transport

__all__ = ["Coordinator"]


class Coordinator(Scoring, Recovery):
    """Drives steps over any transport.

    ``clients`` names the parties that take turns playing ``plan``'s single data role (round
    robin); leave it empty when every role is played by the party of the same name (one client,
    vertical, multi-hop). ``data_parties`` are the parties whose manifests it waits for.

    Fault tolerance, for transports whose parties can be lost (:class:`PartyLost`): set
    ``rejoin(party)`` to a function that blocks until ``party`` is connected again (or raises).
    The step in progress is then rolled back on every connected party (:class:`Abort`, to their
    checkpoints of the last step all finished) and run again; a lost party is waited for only
    when a step needs it, and rolled back when it is back. ``on_commit()`` is called after every
    finished training step or relay, when :meth:`state_dict` is worth saving; ``on_lost(lost)``
    each time a party is reported lost (or cut off), with the reason; ``on_progress()`` each time
    the session moves on: a step (of any mode), a relay or a roll back finished.
    """

    def __init__(
        self,
        plan: Plan,
        transport: Transport,
        *,
        data_parties: Sequence[str],
        clients: Sequence[str] = (),
        relay: str = "peer",
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        if relay not in ("peer", "server"):
            raise ValueError(f"relay must be 'peer' or 'server', got {relay!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if clients and len(plan.data_roles) != 1:
            raise ValueError("round-robin clients need a plan with exactly one data role")
        self.plan, self.transport = plan, transport
        self.name = plan.coordinator
        self.group_role = plan.data_roles[0] if clients else None
        self.clients = list(clients)
        self.data_parties = list(data_parties)
        self.relay, self.batch_size, self.seed = relay, batch_size, seed
        self.holder = self.clients[0] if self.clients else None
        self.step = 0
        self.pipeline = pipelinable(plan)  # issue the next training step before the current one has finished
        self.manifests: dict[str, dict[str, torch.Tensor]] = {}
        self.aligned: dict[str, torch.Tensor] = {}  # vertical: split -> the sample ids every data party holds, ascending
        self.dropped: dict[str, int] = {}  # vertical: party -> the samples it announced that another party lacks
        self._done: dict[int, set[str]] = {}  # step in flight -> the parties that finished it
        self._aborted: set[str] = set()
        self._relayed = False
        self._relay_target: str | None = None
        self._asked: Asked | None = None
        self._scores: dict[str, dict[str, dict[str, int | float]]] = {}  # label owner -> task -> its totals
        self.leakage_reported: dict[str, dict[str, Any]] = {}  # data party -> {"dcor": {node: value}, "collapsed"}, of the last pass
        # fault tolerance
        self._committed_holder = self.holder
        self.rejoin: Callable[[str], None] | None = None
        self.on_commit: Callable[[], None] | None = None
        self.on_lost: Callable[[PartyLost], None] | None = None
        self.on_progress: Callable[[], None] | None = None
        self.committed = 0  # the last step after which every party checkpointed
        self.checkpoint_every = 1  # training steps between checkpoints (also at turn and epoch ends)
        self.epoch, self.next_batch = 1, 0  # where training goes on
        self._cursor = (1, 0)  # (epoch, next batch) at the last commit
        self.floor = 0  # StepDones of earlier steps belong to an aborted attempt
        self.absent: dict[str, int] = {}  # lost party -> the step it must roll back to when back
        self.parties = sorted(set(self.data_parties) | set(self.clients) | {r for r in plan.roles if r != self.group_role})
        transport.register(self.name, self.handle)

    def handle(self, msg: Message) -> None:
        if isinstance(msg, Manifest):
            if msg.sender not in self.data_parties:
                raise ProtocolError(f"manifest from unknown party {msg.sender!r}")
            known = self.manifests.get(msg.sender)
            if known is not None and (known.keys() != msg.sample_ids.keys()
                                      or not all(torch.equal(known[k], msg.sample_ids[k]) for k in known)):
                raise ProtocolError(f"{msg.sender} announced different sample ids than before")
            self.manifests[msg.sender] = msg.sample_ids
        elif isinstance(msg, StepDone) and msg.tag == "step" and msg.step in self._done:
            self._done[msg.step].add(msg.sender)
        elif isinstance(msg, StepDone) and msg.tag != "step" and msg.step == self.step:
            if msg.tag == "relay":
                if self._relay_target is None or msg.sender != self._relay_target:
                    raise ProtocolError(f"coordinator: relay done from {msg.sender}, which was not relayed to (step {msg.step})")
                self._relayed = True
            else:
                self._aborted.add(msg.sender)
        elif isinstance(msg, StepDone) and 0 < msg.step < self.floor:
            pass  # from the attempt of a step that was aborted
        elif (isinstance(msg, Scores) and (asked := self._asked) is not None and (asked.split, asked.step) == (msg.split, msg.step)
              and msg.sender in asked.parties and msg.sender not in self._scores):
            self._scores[msg.sender] = self._check_scores(msg)
        elif isinstance(msg, Scores) and 0 < msg.step < self.floor:
            pass  # the answer to a request of an aborted evaluation pass
        else:
            raise ProtocolError(f"coordinator: unexpected {msg.kind} from {msg.sender} (step {msg.step})")

    # -- setup ---------------------------------------------------------------------------------

    def collect_manifests(self) -> None:
        """Wait for every data party's manifest; check round-robin clients hold the same splits.
        Vertical parties train and evaluate on the samples that all of them hold (:attr:`aligned`);
        :attr:`dropped` counts, per party, the samples it announced that another lacks."""
        self.transport.run_until(lambda: set(self.manifests) >= set(self.data_parties))
        if self.group_role is not None:  # each client in turn trains and evaluates on its own shards
            first, *others = self.clients
            for other in others:
                if self.manifests[other].keys() != self.manifests[first].keys():
                    raise ValueError(f"round-robin clients must hold the same splits: {other!r} holds "
                                     f"{sorted(self.manifests[other])}, {first!r} holds {sorted(self.manifests[first])}")
            return
        first, *others = self.data_parties
        for other in others:
            if self.manifests[other].keys() != self.manifests[first].keys():
                raise ValueError(f"vertical parties must hold the same splits: {other!r} holds {sorted(self.manifests[other])}, "
                                 f"{first!r} holds {sorted(self.manifests[first])}")
        self.aligned = {}
        for split, ids in self.manifests[first].items():
            common = torch.sort(ids).values
            for other in others:
                common = common[torch.isin(common, self.manifests[other][split])]
            self.aligned[split] = common
        if not len(self.aligned.get("train", ())):
            sizes = ", ".join(f"{p!r} {len(self.manifests[p].get('train', ()))}" for p in self.data_parties)
            raise ValueError(f"vertical parties hold no training sample in common (training samples: {sizes}); "
                             "their sample ids must name the same samples")
        aligned = sum(len(ids) for ids in self.aligned.values())
        self.dropped = {p: sum(len(ids) for ids in self.manifests[p].values()) - aligned for p in self.data_parties}

    # -- schedule ------------------------------------------------------------------------------

    def _bindings(self, client: str | None) -> dict[str, str]:
        return {role: (client if role == self.group_role else role) for role in self.plan.roles}

    def _batches(self, ids: torch.Tensor, *, shuffle_key: tuple[int, ...] | None, batch_size: int):
        return shuffled_batches(ids, batch_size, key=shuffle_key)

    def schedule(self, epoch: int, split: str = "train") -> list[Batch]:
        """The batches of ``epoch`` in order. Round robin: each client's whole shard in turn."""
        key = lambda k: (self.seed, epoch, k) if split == "train" else None  # noqa: E731
        if self.group_role is None:
            ids = self.aligned[split]
            return [Batch(self._bindings(None), b) for b in self._batches(ids, shuffle_key=key(0), batch_size=self.batch_size)]
        out = []
        for k, client in enumerate(self.clients):
            ids = self.manifests[client][split]
            out += [Batch(self._bindings(client), b) for b in self._batches(ids, shuffle_key=key(k), batch_size=self.batch_size)]
        return out

    # -- running -------------------------------------------------------------------------------

    def run_step(self, batch: Batch, *, mode: str = "train", split: str = "train", checkpoint: bool = True) -> None:
        """Run one step, relaying the shared segments first if it is another client's turn.
        ``checkpoint``: the parties save their state after this (training) step."""
        self._finish(self._issue(batch, mode=mode, split=split, checkpoint=checkpoint))

    def _issue(self, batch: Batch, *, mode: str = "train", split: str = "train",
               checkpoint: bool = True) -> tuple[int, set[str], bool]:
        """Start a step (after a relay, if it is another client's turn): its id, its parties, and
        whether they checkpoint after it."""
        if self.group_role is not None and batch.bindings[self.group_role] != self.holder:
            self.relay_to(batch.bindings[self.group_role])
        parties = list(dict.fromkeys(batch.bindings.values()))
        self._await(parties)
        self.step += 1
        self._done[self.step] = set()
        checkpoint = checkpoint and mode == "train"
        for party in parties:
            self.transport.send(StartStep(self.name, party, self.step, mode=mode, split=split, sample_ids=batch.sample_ids,
                                          bindings=batch.bindings, checkpoint=checkpoint, epoch=self.epoch))
        return self.step, set(parties), checkpoint

    def _finish(self, issued: tuple[int, set[str], bool]) -> None:
        """Wait until every party of an issued step has finished it."""
        step, expected, _ = issued
        self.transport.run_until(lambda: self._done[step] >= expected)
        del self._done[step]
        self._progressed()

    def relay_to(self, client: str) -> None:
        """Move the shared segments (and optimiser state) from the current holder to ``client``."""
        self._await([self.holder, client] + ([self.plan.relay_role] if self.relay == "server" else []))
        self.step += 1
        self._relay_target, self._relayed = client, False
        self.transport.send(RelayRequest(self.name, self.holder, self.step, destination=client, route=self.relay))
        self.transport.run_until(lambda: self._relayed)
        self.holder = client
        self._progressed()
        self._commit(self.step)

    def train_epoch(self, epoch: int, on_step: Callable[[int, int], None] | None = None, *, start: int = 0) -> None:
        """Train the batches of ``epoch`` from the ``start``-th on. The parties checkpoint every
        ``checkpoint_every`` batches, at the end of each client's turn and of the epoch; a lost
        party rolls every party back to the last checkpoint and training goes on from there."""
        batches = self.schedule(epoch)
        self.epoch = epoch

        def turn_ends(i: int) -> bool:
            return i + 1 == len(batches) or batches[i + 1].bindings != batches[i].bindings

        def save_after(i: int) -> bool:
            return turn_ends(i) or (i + 1) % self.checkpoint_every == 0

        i, ahead = start, None  # ahead: the step of batch i, when issued before batch i - 1 finished
        while i < len(batches):
            self.next_batch = i
            try:
                current = ahead or self._issue(batches[i], checkpoint=save_after(i))
                ahead = None
                if self.pipeline and not turn_ends(i) and not self.absent:
                    ahead = self._issue(batches[i + 1], checkpoint=save_after(i + 1))
                self._finish(current)
            except PartyLost as lost:
                ahead = None
                self.recover(lost)
                i = self._cursor[1] if self._cursor[0] == epoch else 0
                continue
            i += 1
            if current[2]:  # as issued: checkpoint_every may have changed since
                self.next_batch = i
                self._commit(current[0])
            if on_step is not None:
                on_step(i, len(batches))

