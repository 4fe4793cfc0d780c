"""The coordinator: decides which batch runs next and whose turn it is; sees no data or tensors.

It learns each data party's sample ids (``Manifest``), draws the batch order from a seed, starts
each step by telling the data parties which ids to run, waits for every party's ``StepDone``, and
in round-robin training asks the client holding the shared segments to relay them to the next.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from splitlearn.split.messages import Manifest, Message, ProtocolError, RelayRequest, StartStep, StepDone
from splitlearn.split.plan import Plan
from splitlearn.split.transport import Transport

__all__ = ["Batch", "Coordinator", "shuffled_batches"]


def shuffled_batches(ids: torch.Tensor, batch_size: int, *, key: tuple[int, ...] | None) -> list[torch.Tensor]:
    """``ids`` in batches, shuffled by a generator seeded from the ints in ``key`` (None: in order).
    The same key gives the same order in every process and for every method compared."""
    if key is not None:
        seed = sum(v * 1_000_003**i for i, v in enumerate(key)) % 2**62
        ids = ids[torch.randperm(len(ids), generator=torch.Generator().manual_seed(seed))]
    return list(torch.split(ids, batch_size))


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
        self.manifests: dict[str, dict[str, torch.Tensor]] = {}
        self._done: set[str] = set()
        self._relayed = False
        transport.register(self.name, self.handle)

    def handle(self, msg: Message) -> None:
        if isinstance(msg, Manifest):
            if msg.sender not in self.data_parties:
                raise ProtocolError(f"manifest from unknown party {msg.sender!r}")
            self.manifests[msg.sender] = msg.sample_ids
        elif isinstance(msg, StepDone) and msg.step == self.step:
            if msg.tag == "relay":
                self._relayed = msg.sender == self._relay_target
            else:
                self._done.add(msg.sender)
        else:
            raise ProtocolError(f"coordinator: unexpected {msg.kind} from {msg.sender} (step {msg.step})")

    # -- setup ---------------------------------------------------------------------------------

    def collect_manifests(self) -> None:
        """Wait for every data party's manifest; check vertical parties hold the same samples."""
        self.transport.run_until(lambda: set(self.manifests) >= set(self.data_parties))
        if self.group_role is not None:
            return
        first, *others = self.data_parties
        for other in others:
            for split, ids in self.manifests[first].items():
                theirs = self.manifests[other].get(split)
                if theirs is None:
                    raise ValueError(f"vertical party {other!r} holds no {split!r} samples, {first!r} holds {len(ids)}")
                a, b = set(ids.tolist()), set(theirs.tolist())
                if a != b:
                    raise ValueError(
                        f"vertical parties hold different {split!r} samples: {other!r} lacks {len(a - b)} "
                        f"of {first!r}'s ids (e.g. {sorted(a - b)[:3]}) and has {len(b - a)} it lacks "
                        f"(e.g. {sorted(b - a)[:3]}); align them by sample id first"
                    )

    # -- schedule ------------------------------------------------------------------------------

    def _bindings(self, client: str | None) -> dict[str, str]:
        return {role: (client if role == self.group_role else role) for role in self.plan.roles}

    def _batches(self, ids: torch.Tensor, *, shuffle_key: tuple[int, ...] | None, batch_size: int):
        return shuffled_batches(ids, batch_size, key=shuffle_key)

    def schedule(self, epoch: int, split: str = "train") -> list[Batch]:
        """The batches of ``epoch`` in order. Round robin: each client's whole shard in turn."""
        key = lambda k: (self.seed, epoch, k) if split == "train" else None  # noqa: E731
        if self.group_role is None:
            ids = torch.sort(self.manifests[self.data_parties[0]][split]).values
            return [Batch(self._bindings(None), b) for b in self._batches(ids, shuffle_key=key(0), batch_size=self.batch_size)]
        out = []
        for k, client in enumerate(self.clients):
            ids = self.manifests[client][split]
            out += [Batch(self._bindings(client), b) for b in self._batches(ids, shuffle_key=key(k), batch_size=self.batch_size)]
        return out

    # -- running -------------------------------------------------------------------------------

    def run_step(self, batch: Batch, *, mode: str = "train", split: str = "train") -> None:
        if self.group_role is not None and batch.bindings[self.group_role] != self.holder:
            self.relay_to(batch.bindings[self.group_role])
        self.step += 1
        self._done = set()
        parties = list(dict.fromkeys(batch.bindings.values()))
        expected = set(parties)
        for party in parties:
            self.transport.send(
                StartStep(self.name, party, self.step, mode=mode, split=split, sample_ids=batch.sample_ids, bindings=batch.bindings)
            )
        self.transport.run_until(lambda: self._done >= expected)

    def relay_to(self, client: str) -> None:
        """Move the shared segments (and optimiser state) from the current holder to ``client``."""
        self.step += 1
        self._relay_target, self._relayed = client, False
        self.transport.send(RelayRequest(self.name, self.holder, self.step, destination=client, route=self.relay))
        self.transport.run_until(lambda: self._relayed)
        self.holder = client

    def train_epoch(self, epoch: int, on_step: Callable[[int, int], None] | None = None) -> None:
        batches = self.schedule(epoch)
        for i, batch in enumerate(batches):
            self.run_step(batch)
            if on_step is not None:
                on_step(i + 1, len(batches))

    def evaluate(self, split: str = "test", *, batch_size: int = 512) -> None:
        """Run ``split`` forward through the protocol; the label owner scores it locally.

        In round robin the current holder of the shared segments evaluates on its own copy.
        """
        owner = self.holder if self.group_role is not None else self.data_parties[0]
        ids = torch.sort(self.manifests[owner][split]).values
        bindings = self._bindings(self.holder)
        for b in self._batches(ids, shuffle_key=None, batch_size=batch_size):
            self.run_step(Batch(bindings, b), mode="eval", split=split)
