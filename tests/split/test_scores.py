"""A label owner that runs elsewhere than the coordinator reports its evaluation totals over each
pass when it shares them: by default when it sends its labels away for training anyway (vanilla),
not when they never leave it (U-shaped)."""

import dataclasses

import pytest
import torch

from splitlearn.split import configs
from splitlearn.split.cast import build_parties
from splitlearn.split.messages import ProtocolError, Scores
from splitlearn.split.simulation import Simulation
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
    sim = Simulation(_split(kind), parties=cast, transport=transport, local=set(cast.parties) - {"client"}, batch_size=16)
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


def _tampered(change):
    """An outbox that replaces the totals of every Scores the client sends by ``change(totals)``."""
    def outbox(message):
        if not isinstance(message, Scores):
            return message
        return dataclasses.replace(message, meta=change(message.meta["y"]))
    return outbox


@pytest.mark.parametrize(("change", "problem"), [
    (lambda t: {"y": t | {"correct": t["count"] + 1}}, "'correct': 41"),
    (lambda t: {"y": t | {"loss_sum": -1.0}}, "'loss_sum': -1.0"),
    (lambda t: {"y": t | {"loss_sum": 10**400}}, "'loss_sum': 1000"),  # an int no float can hold
    (lambda t: {"y": t | {"loss_sum": True}}, "'loss_sum': True"),
    (lambda t: {"y": t | {"count": float(t["count"])}}, "'count': 40.0"),
    (lambda t: {"y": t | {"count": 0, "correct": 0}}, "'count': 0"),
    (lambda t: {"y": t | {"count": t["count"] - 1}}, "'count': 39"),  # not every sample of the pass
    (lambda t: {"y": {"count": t["count"], "correct": 1}}, "'correct': 1}"),
    (lambda t: {"other": t}, "'other'"),
    (lambda t: {"y": [4, 1, 1.0]}, "[4, 1, 1.0]"),
])
def test_scores_that_are_not_totals_of_the_pass_are_refused_by_name(tabular, change, problem):
    sim, _ = _with_remote_client("vanilla", tabular, outbox=_tampered(change))
    samples = len(sim.coordinator.manifests["client"]["test"])
    assert samples == 40  # the counts in the problems above
    with pytest.raises(ProtocolError, match="client reported scores that are not totals of a task here over the 40 samples") as e:
        sim.evaluate()
    assert problem in str(e.value)


def test_unrequested_scores_are_refused(tabular):
    sim, client = _with_remote_client("vanilla", tabular)
    client.send(Scores("client", "coordinator", 0, split="test", meta={}))
    with pytest.raises(ProtocolError, match="coordinator: unexpected Scores from client"):
        sim.transport.run_until(lambda: False)


def test_scores_of_a_party_that_was_not_asked_are_refused(tabular):
    """Round robin: only the holder (client0 here) is asked; client1's scores are refused."""
    train, test = tabular
    cast = build_parties(_split("vanilla"), train=train, test=test, clients=2)
    transport = LocalTransport()
    sim = Simulation(_split("vanilla"), parties=cast, transport=transport, local={"server"}, batch_size=16)
    for name in ("client0", "client1"):
        cast.parties[name].connect(transport)
        cast.parties[name].announce()
    sim.coordinator.collect_manifests()
    asked = sim.coordinator.holder
    other = next(c for c in ("client0", "client1") if c != asked)
    send = cast.parties[asked].send

    def also_the_other(message):  # when the holder answers, the other client answers first
        if isinstance(message, Scores):
            cast.parties[other].send(dataclasses.replace(message, sender=other))
        send(message)

    cast.parties[asked].send = also_the_other
    with pytest.raises(ProtocolError, match=f"coordinator: unexpected Scores from {other}"):
        sim.evaluate()


def test_a_simulation_of_built_parties_refuses_data_options_and_unknown_parties(tabular):
    train, test = tabular
    cast = build_parties(_split("vanilla"), train=train, test=test)
    with pytest.raises(TypeError, match="takes no clients, train: pass them to build_parties"):
        Simulation(_split("vanilla"), parties=cast, train=train, clients=2)
    with pytest.raises(ValueError, match=r"no parties named \['hospital'\]"):
        Simulation(_split("vanilla"), parties=cast, local={"hospital"})
    with pytest.raises(TypeError, match="needs train data"):
        Simulation(_split("vanilla"))


# -- leakage reported by a data party that runs elsewhere ------------------------------------------


def _leaky(kind, tabular, *, change=None):
    """The remote client measures its leakage as splitlearn's deployments do (asked at batch size
    16); ``change`` replaces what it reports."""
    from splitlearn.runner import party_leakage

    outbox = None if change is None else (lambda m: dataclasses.replace(m, meta=m.meta | {"leakage": change(m.meta["leakage"])})
                                          if isinstance(m, Scores) else m)
    sim, client = _with_remote_client(kind, tabular, outbox=outbox)
    client.leakage = party_leakage
    sim.leakage_batch_size = 16
    return sim, client


@pytest.mark.parametrize("kind", ["vanilla", "ushaped"])
def test_a_remote_data_party_reports_the_leakage_train_measures(tabular, kind):
    from splitlearn.runner import client_leakage

    train, test = tabular
    reference = Simulation(_split(kind), train=train, test=test, batch_size=16)
    reference.fit(1)
    sim, client = _leaky(kind, tabular)
    sim.fit(1)
    got, want = sim.remote_leakage(), client_leakage(reference, batch_size=16)
    assert want["dcor_by_party"] and got == want  # the same value, under the same key, as measured in process
    sim.leakage_batch_size = 0
    sim.evaluate()
    assert sim.remote_leakage() == {}  # not asked, not reported


@pytest.mark.parametrize(("change", "problem"), [
    (lambda leak: leak | {"dcor": {"client": 1.5}}, "1.5"),  # DCOR lies in [0, 1]
    (lambda leak: leak | {"dcor": {"client": float("nan")}}, "nan"),
    (lambda leak: leak | {"dcor": {"server": 0.5}}, "'server'"),  # a node, but not one of its data nodes
    (lambda leak: leak | {"collapsed": "no"}, "'no'"),
    (lambda leak: leak | {"note": "x"}, "'note'"),
    (lambda leak: {"dcor": {}, "collapsed": False}, "{}"),
])
def test_leakage_that_is_not_dcor_of_the_senders_data_nodes_is_refused(tabular, change, problem):
    sim, _ = _leaky("vanilla", tabular, change=change)
    with pytest.raises(ProtocolError, match="client reported leakage that is not DCOR values in \\[0, 1\\] of its data nodes") as e:
        sim.evaluate()
    assert problem in str(e.value)


def test_leakage_nobody_asked_for_is_refused(tabular):
    sim, _ = _with_remote_client("vanilla", tabular, outbox=lambda m: dataclasses.replace(
        m, meta=m.meta | {"leakage": {"dcor": {"client": 0.5}, "collapsed": False}}) if isinstance(m, Scores) else m)
    with pytest.raises(ProtocolError, match="client reported leakage .* as asked"):
        sim.evaluate()
