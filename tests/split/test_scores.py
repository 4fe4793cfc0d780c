"""A label owner that runs elsewhere than the coordinator reports its evaluation totals over each
pass when it shares them: by default when it sends its labels away for training anyway (vanilla),
not when they never leave it (U-shaped)."""

import dataclasses

import pytest
import torch

from splitlearn.simulation import Simulation, build_parties
from splitlearn.split import configs
from splitlearn.split.messages import ProtocolError, Scores
from splitlearn.transport.local import LocalTransport

from .conftest import mlp


def _split(kind):
    torch.manual_seed(0)
    if kind == "ushaped":
        return configs.ushaped(mlp(), [1, 3], in_shape=(10,))
    return configs.vanilla(mlp(), [2], in_shape=(10,))


def _with_remote_client(kind, tabular, *, share=None, outbox=None):
    """The coordinator and the server here; the client party ("client") served by the same
    transport but not run by the simulation, as a process elsewhere would be."""
    train, test = tabular
    cast = build_parties(_split(kind), train=train, test=test)
    transport = LocalTransport()
    sim = Simulation.hosting(_split(kind), cast, transport, local=set(cast.parties) - {"client"}, batch_size=16)
    client = cast.parties["client"]
    client.connect(transport)
    if outbox is not None:
        send = client.send
        client.send = lambda message: send(outbox(message))
    if share is not None:
        client.share_scores = share
    client.announce()
    sim.coordinator.collect_manifests()
    return sim, client


@pytest.mark.parametrize(("kind", "share", "reported"), [
    ("vanilla", None, True),  # the labels reach the server for training anyway
    ("ushaped", None, False),  # the labels never leave the client: neither do its scores
    ("ushaped", True, True),  # unless it chooses to report them
    ("vanilla", False, False),
])
def test_remote_label_owner_reports_its_totals_if_it_shares_them(tabular, kind, share, reported):
    train, test = tabular
    reference = Simulation(_split(kind), train=train, test=test, batch_size=16)
    reference.fit(2)
    sim, client = _with_remote_client(kind, tabular, share=share)
    sim.fit(2)
    for got, want in zip(sim.history, reference.history, strict=True):
        scores = {k: v for k, v in want.items() if k.startswith("test_")}
        assert scores.keys() == {"test_accuracy", "test_loss", "test_count"}
        if reported:  # the same totals as in process, pass by pass (each starts from zero)
            assert {k: got[k] for k in scores} == scores
        else:
            assert not any(k.startswith("test_") for k in got), got
    assert client.eval_totals == {}  # reported (or not) and forgotten


def _tampered(meta):
    return lambda message: dataclasses.replace(message, meta=meta) if isinstance(message, Scores) else message


@pytest.mark.parametrize(("meta", "problem"), [
    ({"y": {"count": 4, "correct": 5, "loss_sum": 1.0}}, "'correct': 5"),
    ({"y": {"count": 4, "correct": 1, "loss_sum": -1.0}}, "'loss_sum': -1.0"),
    ({"y": {"count": 4.0, "correct": 1, "loss_sum": 1.0}}, "'count': 4.0"),
    ({"y": {"count": 4, "correct": 1}}, "'correct': 1}"),
    ({"other": {"count": 4, "correct": 1, "loss_sum": 1.0}}, "'other'"),
    ({"y": [4, 1, 1.0]}, "[4, 1, 1.0]"),
])
def test_scores_that_are_not_totals_are_refused_by_name(tabular, meta, problem):
    sim, _ = _with_remote_client("vanilla", tabular, outbox=_tampered(meta))
    with pytest.raises(ProtocolError, match="client reported scores that are not totals of a task here") as e:
        sim.evaluate()
    assert problem in str(e.value)


def test_unrequested_scores_are_refused(tabular):
    sim, client = _with_remote_client("vanilla", tabular)
    client.send(Scores("client", "coordinator", 0, split="test", meta={}))
    with pytest.raises(ProtocolError, match="coordinator: unexpected Scores from client"):
        sim.transport.run_until(lambda: False)
