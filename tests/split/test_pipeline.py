"""Steps pipelined one deep: the next StartStep is out before the current step has finished, each
party begins it once it has finished the current one itself, and the results are those of running
steps one at a time. A party restarted from a checkpoint takes no part until it is rolled back."""

import pytest
import torch
from torch import nn

from splitlearn.checkpoint import FolderCheckpoints
from splitlearn.simulation import Simulation
from splitlearn.split import OptimizerSpec, ProtocolError, Vertical, configs
from splitlearn.split.messages import Abort, StartStep, StepDone

from .conftest import mlp


def _split(kind):
    torch.manual_seed(0)
    if kind == "vertical":
        return configs.vertical(Vertical([nn.Linear(5, 4), nn.Linear(5, 4)], nn.Linear(8, 3)), in_shape=(10,))
    if kind == "ushaped":
        return configs.ushaped(mlp(), [1, 3], in_shape=(10,))
    return configs.vanilla(mlp(), [2], in_shape=(10,))


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
