"""The coordinator: decides which batch runs next and whose turn it is; sees no data or tensors.

It learns each data party's sample ids (``Manifest``), draws the batch order from a seed, starts
each step by telling the data parties which ids to run, waits for every party's ``StepDone``, and
in round-robin training asks the client holding the shared segments to relay them to the next.

Training steps are pipelined one deep: the ``StartStep`` of the next batch goes out with the
current one's, and each party begins it as soon as it has finished the current step itself. A
party's work and its order are the same as without pipelining (the results are identical), but
the round trip from a party's ``StepDone`` to the next ``StartStep`` leaves the critical path: over
a network, one message delay less per step.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from splitlearn.split.messages import Abort, Manifest, Message, ProtocolError, RelayRequest, ScoreRequest, Scores, StartStep, StepDone
from splitlearn.split.plan import Plan
from splitlearn.split.transport import PartyLost, Transport

__all__ = ["Batch", "Coordinator", "pipelinable", "shuffled_batches"]


def _as_float(value: int | float) -> float:
    """``value`` as a float; an int too large for one is infinite."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


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
class _Asked:
    """The ScoreRequests out: for which pass (split, step), to whom, over how many samples."""

    split: str
    step: int
    parties: frozenset[str]
    samples: int
    leakage: frozenset[str] = frozenset()  # the data parties asked for DCOR(X, Z) too


@dataclass(frozen=True)
class Batch:
    """One step of the schedule: which party plays each role, and the sample ids of the batch."""

    bindings: dict[str, str]
    sample_ids: torch.Tensor


class Coordinator:
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
        self._asked: _Asked | None = None
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
        self._asked, self._scores, self.leakage_reported = _Asked(split, self.step, frozenset(parties), samples, leak), {}, {}
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
