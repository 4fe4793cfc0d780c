"""Steps pipelined one deep: the next StartStep is out before the current step has finished, each
party begins it once it has finished the current one itself, and the results are those of running
steps one at a time. A party restarted from a checkpoint takes no part until it is rolled back."""

import random
from collections import defaultdict, deque

import pytest
import torch
from torch import nn

from splitlearn.checkpoint import FolderCheckpoints
from splitlearn.split import Head, Node, OptimizerSpec, Plan, ProtocolError, Vertical, configs
from splitlearn.split.configs import Split
from splitlearn.split.coordinator import pipelinable
from splitlearn.split.messages import Abort, StartStep, StepDone
from splitlearn.split.simulation import Simulation
from splitlearn.split.transport import Transport

from .conftest import mlp


def _split(kind):
    torch.manual_seed(0)
    if kind.startswith("vertical"):
        labels = {"vertical": {}, "vertical-labels-client0": {"label_role": "client0"},
                  "vertical-labels-party": {"label_role": "labels"}}[kind]
        return configs.vertical(Vertical([nn.Linear(5, 4), nn.Linear(5, 4)], nn.Linear(8, 3)), in_shape=(10,), **labels)
    if kind == "ushaped":
        return configs.ushaped(mlp(), [1, 3], in_shape=(10,))
    if kind == "multihop":
        return configs.multihop(mlp(), [1, 3], in_shape=(10,))
    if kind == "two-segment-receiver":  # client0 holds a data segment and the top, which client1 feeds
        plan = Plan((Node("a", "client0"), Node("m", "server", ("a",)), Node("b", "client1"),
                     Node("top", "client0", ("m", "b"), heads=(Head("y", "client0"),))))
        return Split(plan, {"a": nn.Linear(5, 4), "m": nn.Linear(4, 4), "b": nn.Linear(5, 4), "top": nn.Linear(8, 3)},
                     feature_dim=1)
    return configs.vanilla(mlp(), [2], in_shape=(10,))


class Interleaving(Transport):
    """The order of delivery a gRPC hub allows, drawn at random: the local endpoints share one
    inbox; each remote party has a link to the hub and one back, each in order; which of them moves
    next is up to chance (``seed``)."""

    def __init__(self, seed: int, remote) -> None:
        super().__init__()
        self.handlers, self.remote, self.rng = {}, set(remote), random.Random(seed)
        self.inbox, self.down, self.up = deque(), defaultdict(deque), defaultdict(deque)
        self.check = lambda: None

    def register(self, name, handler) -> None:
        self.handlers[name] = handler

    def send(self, message) -> None:
        self._observe(message)
        if message.sender in self.remote:
            self.up[message.sender].append(message)
        elif message.receiver in self.remote:
            self.down[message.receiver].append(message)
        else:
            self.inbox.append(message)

    def run_until(self, done) -> None:
        while not done():
            ready = [(self.inbox, None)] if self.inbox else []
            ready += [(q, "down") for q in self.down.values() if q] + [(q, "up") for q in self.up.values() if q]
            if not ready:
                raise ProtocolError("no message in flight, yet the awaited step has not completed")
            queue, link = self.rng.choice(ready)
            message = queue.popleft()
            if link == "up":  # reaches the hub, which routes it on
                (self.down[message.receiver] if message.receiver in self.remote else self.inbox).append(message)
            else:
                self.handlers[message.receiver](message)
            self.check()


def _run(kind, tabular, *, pipeline, clients=2):
    train, test = tabular
    sim = Simulation(_split(kind), train=train, test=test, clients=clients, batch_size=16,
                     optimizer=OptimizerSpec("adam", lr=0.01))
    sim.coordinator.pipeline = pipeline
    log = []
    sim.transport.observers.append(log.append)
    sim.fit(2)
    weights = {f"{p.name}.{k}": v for p in sim.parties.values() if p.holds_weights for k, v in p.state()[0].items()}
    return sim, weights, log


@pytest.mark.parametrize("kind,clients", [("vanilla", 1), ("vanilla", 3), ("ushaped", 2), ("vertical", 2)])
def test_pipelined_steps_give_the_weights_of_steps_one_at_a_time(tabular, kind, clients):
    _, serial, serial_log = _run(kind, tabular, pipeline=False, clients=clients)
    sim, piped, piped_log = _run(kind, tabular, pipeline=True, clients=clients)
    assert serial.keys() == piped.keys()
    assert all(torch.equal(serial[k], piped[k]) for k in serial)
    # The same messages, only sent in another order.
    key = lambda m: (m.kind, m.sender, m.receiver, m.step)  # noqa: E731
    assert sorted(map(key, serial_log)) == sorted(map(key, piped_log))
    assert not sim.coordinator._done  # nothing left in flight


def test_the_next_step_is_out_before_the_current_one_is_done(tabular):
    """Within a client's turn the coordinator sends StartStep n + 1 before any StepDone of step n
    reaches it; not across a relay (the next client must first receive the segments)."""
    sim, _, log = _run("vanilla", tabular, pipeline=True, clients=2)
    sent = {(m.kind, m.receiver, m.step): i for i, m in enumerate(log) if m.kind == "StartStep"}
    done = {(m.sender, m.step): i for i, m in enumerate(log) if isinstance(m, StepDone) and m.tag == "step"}
    starts = sorted({(m.step, m.receiver) for m in log if isinstance(m, StartStep) and m.mode == "train"})
    ahead = 0
    for step, party in starts:
        if ("StartStep", party, step + 1) not in sent:
            continue  # the last step of a turn, or the next step is another client's
        if sent[("StartStep", party, step + 1)] < done[(party, step)]:
            ahead += 1
    relays = sum(m.kind == "RelayRequest" for m in log)
    assert relays > 0
    # 80 samples per client, batches of 16: 5 steps a turn, of which the first 4 have a successor in
    # the turn; 2 turns an epoch, 2 epochs, 2 parties a step.
    assert len(starts) == 2 * 2 * 5 * 2
    assert ahead == 2 * 2 * 4 * 2
    relay_steps = {m.step for m in log if m.kind == "RelayRequest"}
    for step in relay_steps:  # the relay goes out only once the holder has finished its steps
        request = next(i for i, m in enumerate(log) if m.kind == "RelayRequest" and m.step == step)
        assert all(i < request for (_, s), i in done.items() if s < step)


def test_a_party_begins_a_queued_step_only_after_its_own(tabular):
    train, _ = tabular
    sim = Simulation(_split("vanilla"), train=train, clients=1, batch_size=16)
    client, ids = sim.parties["client"], torch.arange(4)
    start = lambda step: StartStep("coordinator", "client", step, mode="train", split="train", sample_ids=ids,  # noqa: E731
                                   bindings={"client": "client", "server": "server"})
    sent = []
    client.send = sent.append
    client.handle(start(1))
    assert [m.kind for m in sent] == ["Labels", "Activation"] and client._st.step == 1
    client.handle(start(2))  # queued: step 1 waits for its gradient
    assert len(sent) == 2 and client._next.step == 2
    with pytest.raises(ProtocolError, match="StartStep 3 while steps 1 and 2 are already started"):
        client.handle(start(3))
    with pytest.raises(ProtocolError, match="not the coordinator"):
        client.handle(StartStep("server", "client", 2, mode="train", split="train", sample_ids=ids, bindings={}))


def test_a_restarted_party_drops_messages_until_rolled_back(tabular, tmp_path):
    train, _ = tabular
    sim = Simulation(_split("vanilla"), train=train, clients=1, batch_size=16)
    server = sim.parties["server"]
    server.checkpoints = FolderCheckpoints(tmp_path)
    assert server.resume() == 0 and not server.fenced  # a fresh start: nothing to be rolled back
    server._commit(5)
    assert server.resume() == 5 and server.fenced  # a restart from a checkpoint
    sent = []
    server.send = sent.append
    server.handle(StartStep("coordinator", "server", 7, mode="train", split="train", sample_ids=torch.arange(4),
                            bindings={"client": "client", "server": "server"}))
    assert sent == [] and server._st is None  # dropped
    server.handle(Abort("coordinator", "server", 8, restore_to=5))
    assert not server.fenced and server.floor == 8
    assert [(m.kind, m.tag) for m in sent] == [("StepDone", "abort")]


@pytest.mark.parametrize("kind,clients", [
    ("vanilla", 3), ("ushaped", 2), ("multihop", 1), ("vertical", 2),
    ("vertical-labels-client0", 2),
    ("vertical-labels-party", 2),  # a party holds labels only: not pipelined
    ("two-segment-receiver", 2),  # client0 may still be in step n when client1 sends step n + 1: not pipelined
])
@pytest.mark.parametrize("everyone_remote", [False, True])
def test_pipelined_steps_survive_random_orders_a_hub_allows(tabular, kind, clients, everyone_remote):
    train, test = tabular
    reference = Simulation(_split(kind), train=train, test=test, clients=clients, batch_size=16)
    assert pipelinable(reference.plan) == (kind not in ("vertical-labels-party", "two-segment-receiver"))
    reference.coordinator.pipeline = False
    reference.fit(1)
    expected = {f"{p.name}.{k}": v for p in reference.parties.values() if p.holds_weights for k, v in p.state()[0].items()}
    remote = [n for n, p in reference.parties.items() if everyone_remote or p.role in reference.plan.data_roles]
    for seed in range(3):
        sim = Simulation(_split(kind), train=train, test=test, clients=clients, batch_size=16, transport=Interleaving(seed, remote))
        assert sim.coordinator.pipeline == (kind not in ("vertical-labels-party", "two-segment-receiver"))
        sim.fit(1)
        got = {f"{p.name}.{k}": v for p in sim.parties.values() if p.holds_weights for k, v in p.state()[0].items()}
        assert got.keys() == expected.keys() and all(torch.equal(got[k], expected[k]) for k in got)
        assert sim.history[0]["test_accuracy"] == reference.history[0]["test_accuracy"]


def test_the_committed_checkpoint_is_never_pruned(tabular, tmp_path):
    """A party may checkpoint two steps the coordinator has not yet counted as finished by all
    (the current one and the one pipelined after it): the step to roll back to must survive."""
    train, _ = tabular
    kind, missing = "vertical", []
    for seed in range(4):
        transport = Interleaving(seed, remote=["client0", "client1", "server"])
        sim = Simulation(_split(kind), train=train, clients=2, batch_size=16, transport=transport)
        saved = {}
        for name, party in sim.parties.items():
            store, saved[name] = FolderCheckpoints(tmp_path / f"{seed}-{name}"), []
            save = store.save
            store.save = lambda step, tensors, meta, save=save, log=saved[name]: (log.append(step), save(step, tensors, meta))
            party.checkpoints = store
            party.resume()
        co = sim.coordinator

        def check() -> None:
            for name, party in sim.parties.items():
                due = max((s for s in saved[name] if s <= co.committed), default=None)  # what a roll back loads
                if due is not None and due not in party.checkpoints.steps():
                    missing.append((seed, name, co.committed, party.checkpoints.steps()))

        transport.check = check
        sim.fit(1)
    assert not missing


def test_a_stop_checkpoints_at_the_next_step_it_issues(tabular, tmp_path):
    """``serve`` on SIGTERM: checkpoint_every drops to 1 after a step; the step already issued ahead
    was not checkpointed, so the commit (and the stop) comes at the one after, which every party saved."""
    train, _ = tabular
    sim = Simulation(_split("vanilla"), train=train, clients=1, batch_size=16)
    for name, party in sim.parties.items():
        party.checkpoints = FolderCheckpoints(tmp_path / name)
        party.resume()
    co, commits = sim.coordinator, []
    co.checkpoint_every = 20

    class Stopped(Exception):
        pass

    def on_commit() -> None:
        commits.append(co.committed)
        raise Stopped

    def on_step(i: int, n: int) -> None:
        if i == 5:
            co.checkpoint_every = 1

    co.on_commit = on_commit
    with pytest.raises(Stopped):
        sim.fit(1, on_step=on_step)
    assert commits == [7]  # batch 6 was issued before the stop, without a checkpoint; batch 7 is step 7
    assert all(p.checkpoints.steps() == [0, 7] for p in sim.parties.values())


def test_the_rule_is_needed_where_it_says_no(tabular):
    """Forced on, pipelining breaks the plans the rule turns it off for, under some delivery order."""
    train, test = tabular
    for kind in ("vertical-labels-party", "two-segment-receiver"):
        failures = 0
        for seed in range(6):
            sim = Simulation(_split(kind), train=train, test=test, clients=2, batch_size=16,
                             transport=Interleaving(seed, [n for n in ("client0", "client1", "labels")]))
            sim.coordinator.pipeline = True
            try:
                sim.fit(1)
            except ProtocolError as e:
                assert "while step" in str(e) and "is in progress" in str(e)
                failures += 1
        assert failures > 0, kind
