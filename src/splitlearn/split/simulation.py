"""All parties of a split in one process: the in-process deployment of the protocol.

:class:`Simulation` hands each party only its own segments and data shard, wires them and the
coordinator to a transport (in-process by default), and trains through messages alone.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Callable, Collection, Mapping
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from splitlearn.checkpoint import FolderCheckpoints
from splitlearn.data.dataset import as_array_dataset
from splitlearn.split.cast import Cast, Samples, build_parties
from splitlearn.split.configs import Split
from splitlearn.split.coordinator import Coordinator
from splitlearn.split.messages import Message
from splitlearn.split.party import EvalTotals, Party, Penalty
from splitlearn.split.state import OptimizerSpec
from splitlearn.split.transport import ByteTotals, MessageLog, Transport
from splitlearn.split.weights import load_party_weights, save_party_weights
from splitlearn.transport.local import LocalTransport

__all__ = ["Simulation"]


def _epoch_losses(losses: list[tuple[int, float]], first: int | None) -> list[tuple[int, float]]:
    """The (step, loss) pairs after step ``first`` of a party's list, which is in step order: read
    from its end, so that saving the position does not grow with the session."""
    if first is None:
        return []
    i = len(losses)
    while i and losses[i - 1][0] > first:
        i -= 1
    return losses[i:]


class Simulation:
    """Train a :class:`~splitlearn.split.configs.Split` with every party in this process.

    A plan with one data role gets ``clients`` parties that take turns over disjoint shards of
    ``train`` (round robin, segments relayed ``peer``-to-peer or via the ``server``); a vertical
    plan gives data role ``i`` the ``i``-th chunk of the features along ``split.feature_dim``.
    ``targets`` maps each head's task to a function of the data set's labels (default: identity).
    ``train`` and ``test`` are :class:`~splitlearn.data.ArrayDataset` objects or any map-style
    ``torch.utils.data.Dataset`` of ``(x, y)`` pairs (``TensorDataset`` too), read once.
    ``penalties`` and ``releases`` (by data node), ``compute``, ``outbox`` and ``inbox`` (by role) are passed to the parties; see :class:`Party`.

    Instead of data, ``parties`` may give a :class:`Cast` from :func:`build_parties` (every process
    of a deployment builds the same one), of which only those named in ``local`` run here, on
    ``transport``; the others are remote processes that connect, announce their data and serve
    themselves. Once they have joined, call ``coordinator.collect_manifests()``, then train and
    evaluate as usual. ``log`` records the messages (default: a :class:`MessageLog` of each; a
    long deployment passes :class:`ByteTotals`).
    """

    def __init__(
        self,
        split: Split,
        *,
        train: Samples | Dataset | None = None,
        test: Samples | Dataset | None = None,
        clients: int = 1,
        partition: str = "iid",
        alpha: float = 0.5,
        relay: str = "peer",
        optimizer: OptimizerSpec = OptimizerSpec(),
        batch_size: int = 32,
        eval_batch_size: int = 512,
        seed: int = 0,
        device: str | torch.device = "cpu",
        targets: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
        transport: Transport | None = None,
        penalties: Mapping[str, Penalty] | None = None,
        releases: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
        compute: Callable[[str, str, int], AbstractContextManager] | None = None,
        outbox: Mapping[str, Callable[[Message], Message]] | None = None,
        inbox: Mapping[str, Callable[[Message], Message]] | None = None,
        parties: Cast | None = None,
        local: Collection[str] | None = None,
        log: MessageLog | ByteTotals | None = None,
    ) -> None:
        if parties is None:
            if train is None:
                raise TypeError("Simulation needs train data (or parties built by build_parties)")
            if local is not None:
                raise TypeError("local names which of the given parties run here: it needs parties")
            train = as_array_dataset(train, name="train")
            test = None if test is None else as_array_dataset(test, name="test")
            parties = build_parties(
                split, train=train, test=test, clients=clients, partition=partition, alpha=alpha, optimizer=optimizer,
                seed=seed, device=device, targets=targets, penalties=penalties, releases=releases, compute=compute,
                outbox=outbox, inbox=inbox,
            )
            collect = True  # every party runs here and has announced its data
        else:
            dealt = dict(train=train, test=test, clients=clients, partition=partition, alpha=alpha, optimizer=optimizer,
                         device=device, targets=targets, penalties=penalties, releases=releases, compute=compute, outbox=outbox,
                         inbox=inbox)
            defaults = {k: p.default for k, p in inspect.signature(Simulation.__init__).parameters.items() if k in dealt}
            given = sorted(k for k, v in dealt.items() if v is not defaults[k] and v != defaults[k])
            if given:
                raise TypeError(f"Simulation of parties built already takes no {', '.join(given)}: "
                                "pass them to build_parties")
            collect = False  # parties elsewhere announce their data once they have joined
        self._wire(split, parties, transport or LocalTransport(), local=set(parties.parties) if local is None else local,
                   relay=relay, batch_size=batch_size, seed=seed, eval_batch_size=eval_batch_size, log=log)
        if collect:
            self.coordinator.collect_manifests()

    def _wire(self, split: Split, cast: Cast, transport: Transport, *, local: Collection[str], relay: str,
              batch_size: int, seed: int, eval_batch_size: int, log: MessageLog | ByteTotals | None) -> None:
        unknown = set(local) - set(cast.parties)
        if unknown:
            raise ValueError(f"no parties named {sorted(unknown)}; the split has {sorted(cast.parties)}")
        self.split, self.plan = split, split.plan
        self.transport = transport
        self.log = MessageLog() if log is None else log
        self.transport.observers.append(self.log)
        self.parties = {n: p for n, p in cast.parties.items() if n in local}
        self.device = next(iter(self.parties.values())).device if self.parties else torch.device("cpu")
        for p in self.parties.values():
            p.connect(self.transport)
        self.coordinator = Coordinator(
            self.plan, self.transport, data_parties=cast.data_parties, clients=cast.clients, relay=relay,
            batch_size=batch_size, seed=seed,
        )
        self.eval_batch_size = eval_batch_size
        self.leakage_batch_size = 0  # > 0: each evaluation asks the data parties that run elsewhere for their DCOR(X, Z)
        self.history: list[dict[str, Any]] = []
        self.epoch_first_step: int | None = None  # the coordinator's step when the epoch in progress began
        for name in cast.data_parties:
            if name in self.parties:
                self.parties[name].announce()

    # -- training ------------------------------------------------------------------------------

    def fit(self, epochs: int, *, on_step: Callable[[int, int], None] | None = None, on_epoch=None) -> list[dict[str, Any]]:
        """Train for ``epochs``; after each, evaluate on the test split if there is one."""
        if epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {epochs}")
        for _ in range(epochs):
            epoch = len(self.history) + 1
            start = time.perf_counter()
            c = self.coordinator  # after a restart from a checkpoint, go on where it stood
            resuming = c.epoch == epoch and c.next_batch > 0
            if not resuming or self.epoch_first_step is None:
                self.epoch_first_step = c.step
            first_step = self.epoch_first_step
            c.train_epoch(epoch, on_step=on_step, start=c.next_batch if c.epoch == epoch else 0)
            train_seconds = time.perf_counter() - start
            losses = [l for p in self.parties.values() for s, l in p.losses if s > first_step]
            record: dict[str, Any] = {"epoch": epoch}
            if losses:  # none where the loss is computed by a party that runs elsewhere
                record["train_loss"] = sum(losses) / len(losses)
            if "test" in self.coordinator.manifests[self.coordinator.data_parties[0]]:
                record |= {f"test_{k}": v for k, v in self.evaluate().items()}
            record["seconds"] = time.perf_counter() - start
            record["train_seconds"] = train_seconds  # without the evaluation
            record["bytes_by_sender"] = self.log.bytes_by("sender")
            self.history.append(record)
            if on_epoch is not None:
                on_epoch(record)
        return self.history

    def evaluate(self, split: str = "test", *, client: str | None = None) -> dict[str, float]:
        """Accuracy and loss per task, scored by each label owner on its own labels. A label owner
        that runs elsewhere reports its totals over the pass, if it shares them. With
        :attr:`leakage_batch_size` set, the data parties that run elsewhere and hold their segments
        report DCOR(X, Z) on their own ``split`` data too: see :meth:`remote_leakage`. In round
        robin, ``client`` evaluates its own ``split`` (by default the holder of the segments does)."""
        names = self._label_owner_names(client)
        owners = self.label_owners(client)
        for p in owners.values():
            p.eval_totals.pop(split, None)
        remote = sorted({n for n in names.values() if n not in self.parties})
        c = self.coordinator
        holders = [client or c.holder] if c.group_role is not None else c.data_parties
        reported = c.evaluate(split, batch_size=self.eval_batch_size, ask=remote, leakage_batch_size=self.leakage_batch_size,
                              leakage_from=[p for p in holders if p not in self.parties], client=client)
        out: dict[str, float] = {}
        single = len(names) == 1
        for task, name in names.items():
            if task in owners:
                t = owners[task].eval_totals.get(split, {}).get(task)
            else:
                t = reported.get(name, {}).get(task)
                t = None if t is None else EvalTotals(t["correct"], t["count"], t["loss_sum"])
            if t is None:
                continue
            suffix = "" if single else f"_{task}"
            out[f"accuracy{suffix}"], out[f"loss{suffix}"] = t.accuracy, t.loss
            out[f"count{suffix}"] = t.count
        return out

    def remote_leakage(self) -> dict[str, Any]:
        """What the data parties that run elsewhere reported of their DCOR(X, Z) in the last
        evaluation, in the form of :func:`~splitlearn.runner.client_leakage`: ``dcor`` (the
        mean), ``dcor_by_party`` and ``collapsed``; empty if none reported."""
        by_party, collapsed = {}, False
        for party, leak in sorted(self.coordinator.leakage_reported.items()):
            role = self.coordinator.group_role if party in self.coordinator.clients else party
            several = len(self.plan.nodes_of(role)) > 1
            by_party |= {(f"{party}/{node}" if several else party): float(v) for node, v in leak["dcor"].items()}
            collapsed |= leak["collapsed"]
        if not by_party:
            return {}
        return {"dcor": sum(by_party.values()) / len(by_party), "dcor_by_party": by_party, "collapsed": collapsed}

    def predict(self, split: str = "test", *, client: str | None = None) -> tuple[dict[str, tuple[torch.Tensor, torch.Tensor]], dict[str, float]]:
        """Run ``split`` through the protocol; return (sample ids, outputs) per task, as held by
        each task's label owner here, and the scores :meth:`evaluate` gives (``client``: see there)."""
        owners = self.label_owners(client)
        for p in owners.values():
            p.keep_predictions, p.predictions = True, {}
        try:
            scores = self.evaluate(split, client=client)
        finally:
            for p in owners.values():
                p.keep_predictions = False
        out = {}
        for task, p in owners.items():
            ids, logits = zip(*p.predictions[task])
            out[task] = (torch.cat(ids), torch.cat(logits))
        return out, scores

    def label_owners(self, client: str | None = None) -> dict[str, Party]:
        """The party scoring each task, among the parties that run here (in round robin: in the
        turn of ``client``, by default the holder of the segments)."""
        return {task: self.parties[n] for task, n in self._label_owner_names(client).items() if n in self.parties}

    def _label_owner_names(self, client: str | None = None) -> dict[str, str]:
        """The party scoring each task: task -> party name (here or elsewhere)."""
        group, holder = self.coordinator.group_role, client or self.coordinator.holder
        return {h.task: holder if h.label_role == group else h.label_role for h in self.plan.root.heads}

    # -- checkpoints and resume ----------------------------------------------------------------

    def checkpoint_to(self, folder: str | Path, *, tag: str, fresh: bool) -> None:
        """Each party here checkpoints in ``folder/<party>`` (when the coordinator commits a step)
        and starts from its newest checkpoint there, or, if ``fresh``, forgets them and saves its
        present state as step 0. ``tag`` (a fingerprint of the run's configuration) makes a party
        refuse another configuration's checkpoints."""
        for name, party in self.parties.items():
            store = FolderCheckpoints(Path(folder) / name, tag=tag)
            if fresh:
                store.clear()
            party.checkpoints = store
            party.resume()

    def position(self) -> dict[str, Any]:
        """Where training stands at the last step every party checkpointed, as JSON: the
        coordinator's state, the epochs so far and, of the epoch in progress, each party's losses
        up to that step (its train loss averages them all); the byte totals where they are kept
        as totals. :meth:`go_on_from` takes it in a new process."""
        first, committed = self.epoch_first_step, self.coordinator.committed
        losses = {n: [[s, v] for s, v in _epoch_losses(p.losses, first) if s <= committed] for n, p in self.parties.items()}
        out = {"coordinator": self.coordinator.state_dict(), "history": self.history, "epoch_first_step": first,
               "epoch_losses": losses}
        if isinstance(self.log, ByteTotals):
            out["bytes"] = self.log.state()
        return out

    def go_on_from(self, position: Mapping[str, Any]) -> None:
        """Take up :meth:`position` of an earlier process (after :meth:`checkpoint_to`); then
        ``coordinator.restart()`` rolls every party back to its step, once all are connected."""
        self.coordinator.load_state_dict(position["coordinator"])
        self.history = list(position["history"])
        self.epoch_first_step = position.get("epoch_first_step")
        if "bytes" in position and isinstance(self.log, ByteTotals):  # totals go on from where that process left them
            self.log.carry(position["bytes"])
        for name, party in self.parties.items():
            party.losses = [(int(s), float(v)) for s, v in position.get("epoch_losses", {}).get(name, [])]

    # -- weights on disk -----------------------------------------------------------------------

    def save_weights(self, folder: str | Path) -> dict[str, Path]:
        """Each party that holds segments writes its own ``<party>.safetensors``."""
        return save_party_weights(self.parties.values(), folder)

    def load_weights(self, *folders: str | Path) -> None:
        """Load each role's segments from the files :meth:`save_weights` (or a deployment's
        ``serve`` and ``join``) wrote, looking in each of ``folders`` in turn (for prediction)."""
        folders = tuple(Path(f) for f in folders)
        for name, p in self.parties.items():
            if not p.nodes or not p.holds_weights:
                continue
            candidates = [c for f in folders for c in [f / f"{name}.safetensors", *sorted(f.glob(f"{p.role}*.safetensors"))]]
            path = next((c for c in candidates if c.exists()), None)
            if path is None:
                raise FileNotFoundError(f"no weights for party {name!r} (role {p.role!r}) in {', '.join(map(str, folders))}: "
                                        "a deployment keeps each client's weights at its site (join --out); "
                                        "give that folder with --weights")
            load_party_weights(p, path)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The trained weights under the keys of the model the split was cut from, so that
        ``model.load_state_dict(sim.state_dict())`` gives back the trained model. Entries no
        segment holds (a module the forward never runs) keep the source model's values."""
        split = self.split
        if split.source is None:
            raise ValueError("this split was built without its source model (Split(source=...)), so its keys are unknown")
        held = {node: m for p in self.parties.values() if p.modules for node, m in p.modules.items()}
        elsewhere = sorted(set(split.keys) - set(held))
        if elsewhere:
            raise ValueError(f"the segments of {elsewhere} are held by parties in other processes; "
                             "each party's weights stay in its own folder")
        out = {k: v.detach().clone() for k, v in split.source.state_dict().items()}
        for node, keys in split.keys.items():
            state = held[node].state_dict()
            for k, originals in keys.items():
                for original in originals:
                    out[original] = state[k].detach().clone()
        return out
