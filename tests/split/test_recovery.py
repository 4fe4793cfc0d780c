"""A party lost mid-step (its process killed, its unsent work gone) is rolled back with every
other party to the last step all finished; training then ends with the very weights of a run
that was never interrupted."""

import copy
from collections import deque

import pytest
import torch

from splitlearn.checkpoint import FolderCheckpoints
from splitlearn.split import OptimizerSpec, configs
from splitlearn.split.messages import Abort, ProtocolError, StepDone
from splitlearn.split.simulation import Simulation
from splitlearn.split.transport import PartyLost
from splitlearn.transport.local import LocalTransport

from .conftest import mlp


class CrashingTransport(LocalTransport):
    """Kills party ``victim`` when the first message to it after ``n`` deliveries is due, for each
    ``(n, victim)`` of ``crashes``: every message queued for it is lost, it comes back from its
    newest checkpoint (as a restarted process would), and :class:`PartyLost` is raised."""

    def __init__(self, crashes: list[tuple[int, str]]) -> None:
        super().__init__()
        self.crashes, self.delivered, self.parties, self.kills = sorted(crashes), 0, {}, []

    def run_until(self, done) -> None:
        while not done():
            if not self._queue:
                raise ProtocolError("no message in flight, yet the awaited step has not completed")
            message = self._queue[0]
            if self.crashes and self.delivered >= self.crashes[0][0] and message.receiver == self.crashes[0][1]:
                _, victim = self.crashes.pop(0)
                self._queue = deque(m for m in self._queue if m.receiver != victim)
                self.parties[victim].resume()
                self.parties[victim].floor = 0
                self.kills.append((victim, message.kind, message.step))
                raise PartyLost(victim, "killed")
            self._queue.popleft()
            self.delivered += 1
            self._handlers[message.receiver](message)


def _simulation(kind, data, transport=None, tmp=None, clients=2, relay="peer", device="cpu", every=1):
    train, test = data
    torch.manual_seed(0)
    model = mlp()
    split = {"vanilla": lambda: configs.vanilla(model, [2], in_shape=(10,)),
             "ushaped": lambda: configs.ushaped(model, [1, 3], in_shape=(10,))}[kind]()
    sim = Simulation(split, train=train, test=test, clients=clients, relay=relay, batch_size=16,
                     optimizer=OptimizerSpec("adam", lr=0.01), transport=transport, device=device)
    if tmp is not None:
        for p in sim.parties.values():
            p.checkpoints = FolderCheckpoints(tmp / p.name)
            p.resume()
        transport.parties = sim.parties
        sim.coordinator.rejoin = lambda party: None
        sim.coordinator.checkpoint_every = every
    return sim


def _weights(sim) -> dict[str, torch.Tensor]:
    out = {}
    for p in sim.parties.values():
        if p.holds_weights:
            out |= {f"{k}": v for k, v in p.state()[0].items()}
    return out


@pytest.mark.parametrize("every", [1, 3])
@pytest.mark.parametrize(
    "kind,relay,crashes",
    [
        ("vanilla", "peer", [(5, "server")]),  # the server mid-step
        ("vanilla", "peer", [(9, "client0"), (40, "server"), (41, "client1")]),
        ("vanilla", "server", [(36, "client0"), (37, "server"), (119, "client0")]),  # around relays via the server
        ("ushaped", "peer", [(12, "client0"), (13, "server"), (150, "client1")]),
        ("vanilla", "peer", [(76, "server"), (77, "server")]),  # in evaluation, twice
        ("ushaped", "peer", [(7, "server")]),  # the client has run its head's backward: those gradients go too
    ],
)
def test_lost_parties_do_not_change_the_result(tabular, tmp_path, kind, relay, crashes, device, every):
    """``every``: checkpoints every step, or every third (and at each turn's end): the steps since
    the last checkpoint are run again."""
    reference = _simulation(kind, tabular, relay=relay, device=device)
    reference.fit(2)
    transport = CrashingTransport(crashes)
    sim = _simulation(kind, tabular, transport, tmp_path, relay=relay, device=device, every=every)
    aborts = []
    transport.observers.append(lambda m: aborts.append(m) if isinstance(m, Abort) else None)
    sim.fit(2)
    assert [k[0] for k in transport.kills] == [v for _, v in crashes]  # every crash happened
    assert aborts and all(a.restore_to < a.step for a in aborts)
    expected, got = _weights(reference), _weights(sim)
    assert sorted(expected) == sorted(got)
    assert all(torch.equal(expected[k], got[k]) for k in expected), "weights differ from the uninterrupted run"
    assert [r["test_accuracy"] for r in sim.history] == [r["test_accuracy"] for r in reference.history]


def test_without_rejoin_a_lost_party_stops_training(tabular, tmp_path):
    transport = CrashingTransport([(5, "client0")])
    sim = _simulation("vanilla", tabular, transport, tmp_path)
    sim.coordinator.rejoin = None
    with pytest.raises(PartyLost, match="client0: killed"):
        sim.fit(1)


def test_stale_messages_of_an_aborted_step_are_dropped(tabular, tmp_path):
    sim = _simulation("vanilla", tabular, CrashingTransport([]), tmp_path)
    server = sim.parties["server"]
    server.floor = 10
    before = copy.deepcopy(server.state()[0])
    server.handle(StepDone("coordinator", "server", 3))  # would be a protocol error at step 10
    assert all(torch.equal(before[k], v) for k, v in server.state()[0].items())


def test_sparser_checkpoints_run_more_steps_again(tabular, tmp_path):
    """With a checkpoint every third step, a crash rolls back further, so more steps run twice."""
    starts = {}
    for every in (1, 3):
        transport = CrashingTransport([(9, "client0"), (40, "server")])
        count = [0]
        transport.observers.append(lambda m: count.__setitem__(0, count[0] + (m.kind == "StartStep" and m.mode == "train")))
        _simulation("vanilla", tabular, transport, tmp_path / str(every), every=every).fit(2)
        starts[every] = count[0]
    assert starts[3] > starts[1]
