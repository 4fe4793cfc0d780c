"""Routing, authentication and validation at the hub: a misbehaving stream is cut, others go on."""

import threading
import time

import grpc
import pytest
import torch

from splitlearn.split.messages import (
    Abort,
    Activation,
    Gradient,
    Labels,
    Manifest,
    NonFinite,
    ProtocolError,
    RelayRequest,
    StartStep,
    StepDone,
    Weights,
)
from splitlearn.split.routes import RouteError
from splitlearn.split.transport import MessageLog, PartyLost
from splitlearn.transport.grpc import RateLimit, Stalled, StreamClosed
from splitlearn.transport.proto import splitlearn_pb2 as pb
from splitlearn.transport.proto import splitlearn_pb2_grpc as pb_grpc
from splitlearn.transport.serde import message_to_proto

from .conftest import TIMEOUT, run_until_hearing, start_step


def _refused(client, code: grpc.StatusCode) -> StreamClosed:
    with pytest.raises(StreamClosed) as e:
        client.run_until(lambda: False)
    assert e.value.code is code
    return e.value


def _bob_still_served(hub, connect, lost: str | None = "alice") -> None:
    """Bob's message reaches the hub; the coordinator hears once that ``lost`` was cut off."""
    connect("bob").send(StepDone("bob", "coordinator", 7))
    heard = []
    while not any(m.sender == "bob" for m in hub.received) or (lost and not heard):
        try:
            hub.run_until(lambda: any(m.sender == "bob" for m in hub.received) and (not lost or heard), timeout=TIMEOUT)
        except PartyLost as e:
            heard.append(e.party)
    assert heard == ([lost] if lost else [])
    assert [(m.sender, m.step) for m in hub.received][-1] == ("bob", 7)


def _smashed(step: int, sender: str = "alice", receiver: str = "bob", src: str = "a", dst: str = "b") -> Activation:
    return Activation(sender, receiver, step, mode="train", src=src, dst=dst, tensor=torch.ones(2, 3), sample_ids=torch.arange(2))


def _labels(step: int) -> Labels:
    return Labels("alice", "server", step, task="y", labels=torch.tensor([0, 1]), sample_ids=torch.arange(2))


def test_routes_to_local_endpoints_remote_parties_and_peers(hub, connect):
    log = MessageLog()
    hub.observers.append(log)
    alice, bob = connect("alice"), connect("bob")
    hub.wait_for_parties(["alice", "bob"], timeout=TIMEOUT)
    at_alice, at_bob = [], []
    alice.register("alice", at_alice.append)
    bob.register("bob", at_bob.append)
    alice.send(StepDone("alice", "coordinator", 1))
    start_step(hub, 2)
    alice.run_until(lambda: at_alice)
    peer = _smashed(2)
    alice.send(peer)  # peer to peer along the plan's edge a -> b, through the hub
    hub.send(StepDone("coordinator", "alice", 3))
    hub.run_until(lambda: hub.received)
    bob.run_until(lambda: at_bob)
    alice.run_until(lambda: len(at_alice) == 2)
    assert [(m.sender, m.receiver, m.step) for m in hub.received] == [("alice", "coordinator", 1)]
    assert len(at_bob) == 1 and torch.equal(at_bob[0].tensor, peer.tensor) and at_bob[0].step == 2
    assert [m.kind for m in at_alice] == ["StartStep", "StepDone"]
    assert sorted(r.step for r in log.records) == [1, 2, 2, 3]  # the hub observes every message once


def test_wrong_token_is_refused_and_the_hub_serves_others(hub, connect):
    assert "bearer token" in _refused(connect("alice", token="t-bob-guess"), grpc.StatusCode.UNAUTHENTICATED).details
    _bob_still_served(hub, connect, lost=None)


def test_impersonation_aborts_the_stream(hub, connect):
    alice = connect("alice")
    alice.send(StepDone("bob", "coordinator", 1))
    assert "alice may not send as 'bob'" in _refused(alice, grpc.StatusCode.PERMISSION_DENIED).details
    hub.send(StepDone("coordinator", "alice", 2))  # dropped: alice is gone, the coordinator hears of it
    with pytest.raises(ProtocolError, match="neither local nor connected"):
        hub.send(StepDone("coordinator", "mallory", 2))
    _bob_still_served(hub, connect)
    assert [m.sender for m in hub.received] == ["bob"]


def test_second_connection_with_the_same_identity_is_refused(hub, connect):
    connect("alice")
    hub.wait_for_parties(["alice"], timeout=TIMEOUT)
    assert _refused(connect("alice"), grpc.StatusCode.ALREADY_EXISTS).details == "alice is already connected"


def test_message_to_unknown_party_aborts_the_stream(hub, connect):
    alice = connect("alice")
    alice.send(StepDone("alice", "carol", 1))
    assert "unknown party 'carol'" in _refused(alice, grpc.StatusCode.NOT_FOUND).details
    _bob_still_served(hub, connect)


def _activation():
    env = message_to_proto(Activation("alice", "coordinator", 1, mode="train", src="a", dst="b",
                                      tensor=torch.ones(2, 3), sample_ids=torch.arange(2)))
    return env, env.activation.tensor


def _bad_dtype():
    env, t = _activation()
    t.dtype = 99
    return env


def _bad_shape():
    env, t = _activation()
    t.shape.append(2)
    return env


def _nan_gradient():
    return message_to_proto(Gradient("alice", "coordinator", 1, src="a", dst="b", tensor=torch.tensor([float("nan")])))


def _kind_mismatch():
    env, _ = _activation()
    env.header.kind = "Gradient"
    return env


@pytest.mark.parametrize(("make", "problem"), [
    (_bad_dtype, "bad dtype 99"),
    (_bad_shape, "needs"),
    (_nan_gradient, "NaN"),
    (_kind_mismatch, "header says Gradient"),
])
def test_malformed_envelope_aborts_the_stream(hub, connect, make, problem):
    with grpc.insecure_channel(hub.target) as channel:
        replies = pb_grpc.SplitLearningStub(channel).Session(iter([make()]), metadata=[("authorization", "Bearer t-alice")], timeout=TIMEOUT)
        with pytest.raises(grpc.RpcError) as e:
            list(replies)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "malformed message from alice" in e.value.details() and problem in e.value.details()
    _bob_still_served(hub, connect)
    assert [m.sender for m in hub.received] == ["bob"]


def test_bytes_that_are_no_envelope_abort_the_stream_clearly(hub, connect):
    service = pb.DESCRIPTOR.services_by_name["SplitLearning"].full_name
    with grpc.insecure_channel(hub.target) as channel:
        session = channel.stream_stream(f"/{service}/Session", request_serializer=bytes, response_deserializer=bytes)
        replies = session(iter([b"\xff\xff\xff\xff not protobuf"]), metadata=[("authorization", "Bearer t-alice")], timeout=TIMEOUT)
        with pytest.raises(grpc.RpcError) as e:
            list(replies)
    assert e.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert e.value.details().startswith("malformed message from alice: not a splitlearn Envelope")
    _bob_still_served(hub, connect)


def test_waits_are_bounded(hub):
    with pytest.raises(TimeoutError, match="waiting for .*lambda"):
        hub.run_until(lambda: False, timeout=0.1)
    with pytest.raises(TimeoutError, match=r"\['bob'\] did not connect"):
        hub.wait_for_parties(["bob"], timeout=0.1)
    with pytest.raises(ProtocolError):
        hub.send(StepDone("coordinator", "carol", 1))


@pytest.mark.parametrize("hub", [{"progress_timeout": 0.5}], indirect=True)
def test_messages_that_move_nothing_on_do_not_hold_a_wait_past_the_progress_timeout(hub, connect):
    alice = connect("alice")
    chatter = threading.Event()

    def chat():  # a manifest every 50 ms: a wait bounded only by the time without any message never ends
        while not chatter.is_set():
            alice.send(Manifest("alice", "coordinator", -1, sample_ids={"train": torch.arange(3)}))
            time.sleep(0.05)

    threading.Thread(target=chat, daemon=True).start()
    try:
        hub.run_until(lambda: len(hub.received) >= 3, timeout=2)  # no progress clock yet: only the message timeout
        hub.progressed()
        began = time.monotonic()
        with pytest.raises(Stalled, match=r"^no progress for 0.5 s \(last delivered: Manifest alice -> coordinator"):
            hub.run_until(lambda: False, timeout=2)
        assert 0.4 < time.monotonic() - began < 1.5 and len(hub.received) >= 8  # while messages kept coming
        hub.progressed()  # progress restarts the clock
        more = len(hub.received) + 5
        hub.run_until(lambda: len(hub.received) >= more, timeout=2)
    finally:
        chatter.set()


# -- rate limits -----------------------------------------------------------------------------------


def _steps_from(hub, name: str) -> list[int]:
    return [m.step for m in hub.received if m.sender == name]


def _admitted(hub) -> dict[str, list[int]]:
    """The steps of the messages the hub lets through from each sender, as it routes them (what
    a stream then cut off had queued is not delivered, but was let through the limit)."""
    seen: dict[str, list[int]] = {}
    hub.observers.append(lambda m: seen.setdefault(m.sender, []).append(m.step))
    return seen


@pytest.mark.parametrize("hub", [{"rate": RateLimit(messages_per_s=50, burst_messages=20)}], indirect=True)
def test_a_flooding_client_is_cut_off_while_a_paced_one_goes_on(hub, connect):
    alice, bob = connect("alice"), connect("bob")
    hub.wait_for_parties(["alice", "bob"], timeout=TIMEOUT)
    at_bob, admitted = [], _admitted(hub)
    bob.register("bob", at_bob.append)

    def paced():  # 30 messages at 40/s: past the burst of 20, within the rate of 50/s
        for i in range(30):
            bob.send(StepDone("bob", "coordinator", i))
            time.sleep(1 / 40)

    pacer = threading.Thread(target=paced)
    start = time.monotonic()
    pacer.start()
    for i in range(2000):
        alice.send(StepDone("alice", "coordinator", i))
    refused = _refused(alice, grpc.StatusCode.RESOURCE_EXHAUSTED)
    elapsed = time.monotonic() - start
    assert refused.details == "alice exceeded its rate limit: more than 50 messages/s (burst 20)"
    pacer.join(TIMEOUT)
    assert run_until_hearing(hub, lambda: len(_steps_from(hub, "bob")) == 30) in ([], ["alice"])
    hub.send(StepDone("coordinator", "bob", 99))  # and the hub still reaches bob
    bob.run_until(lambda: at_bob)
    assert _steps_from(hub, "bob") == list(range(30)) and at_bob == [StepDone("coordinator", "bob", 99)]
    assert _steps_from(hub, "alice") == []  # cut off before they were delivered: they died with its stream
    from_alice = admitted["alice"]
    assert from_alice == list(range(len(from_alice)))  # what got through came in order, then nothing
    assert 20 <= len(from_alice) <= 20 + 50 * elapsed


def _ids(step: int, numel: int) -> Manifest:
    return Manifest("alice", "coordinator", step, sample_ids={"train": torch.arange(numel)})


@pytest.mark.parametrize("hub", [{"rate": RateLimit(bytes_per_s=10_000, burst_bytes=10_000)}], indirect=True)
@pytest.mark.parametrize(("numel", "problem"), [
    (500, "more than 10000 bytes/s (burst 10000)"),  # 4 kB each: the third is over
    (1500, "a message of {size} bytes is larger than the byte burst of 10000"),  # 12 kB: even the first
])
def test_bytes_per_second_are_limited(hub, connect, numel, problem):
    alice, size, admitted = connect("alice"), message_to_proto(_ids(0, numel)).ByteSize(), _admitted(hub)
    start = time.monotonic()
    for step in range(10):
        alice.send(_ids(step, numel))
    details = _refused(alice, grpc.StatusCode.RESOURCE_EXHAUSTED).details
    elapsed = time.monotonic() - start
    assert details == f"alice exceeded its rate limit: {problem.format(size=size)}"
    _bob_still_served(hub, connect)
    assert size * len(admitted.get("alice", [])) <= 10_000 + 10_000 * elapsed


def test_the_party_an_endpoint_blames_is_cut_off_not_the_sender(hub, connect):
    """A step completed by alice's message is refused because of bob's input (e.g. smashed data
    that made it non-finite): bob's stream is cut with the reason, alice goes on."""

    why = "server: step 3 would make its loss NaN or Inf; refused and rolled back (caused by the input of bob)"

    def server(message):
        raise NonFinite(why, party="bob")

    hub.register("server", server)
    alice, bob = connect("alice"), connect("bob")
    hub.wait_for_parties(["alice", "bob"], timeout=TIMEOUT)
    start_step(hub, 3)
    alice.send(_labels(3))
    with pytest.raises(PartyLost) as lost:
        hub.run_until(lambda: False, timeout=TIMEOUT)
    assert (lost.value.party, lost.value.expelled) == ("bob", True)
    assert lost.value.reason == f"Labels of step 3 refused: {why}"
    assert _refused(bob, grpc.StatusCode.INVALID_ARGUMENT).details == lost.value.reason
    alice.send(StepDone("alice", "coordinator", 4))
    hub.run_until(lambda: hub.received, timeout=TIMEOUT)  # alice is still served, and nobody else was lost
    assert [(m.sender, m.step) for m in hub.received] == [("alice", 4)] and hub.connected() == ["alice"]


def test_the_coordinator_hears_why_the_hub_cut_a_party_off(hub, connect):
    alice = connect("alice")
    alice.send(Gradient("alice", "coordinator", 1, src="a", dst="b", tensor=torch.tensor([float("nan")])))
    with pytest.raises(PartyLost) as lost:
        hub.run_until(lambda: False, timeout=TIMEOUT)
    assert lost.value.expelled and lost.value.reason.startswith("malformed message from alice: Gradient.tensor: holds NaN or Inf")


# -- only the plan's edges ---------------------------------------------------------------------------


def _peers(hub, connect):
    alice, bob = connect("alice"), connect("bob")
    hub.wait_for_parties(["alice", "bob"], timeout=TIMEOUT)
    at_alice, at_bob = [], []
    alice.register("alice", at_alice.append)
    bob.register("bob", at_bob.append)
    return alice, bob, at_alice, at_bob


def _weights(step: int, receiver: str = "bob") -> Weights:
    return Weights("alice", receiver, step, destination="bob", state={"a.weight": torch.zeros(2, 2)})


ROGUE = {  # what alice sends bob (after the coordinator started step 2 and no relay), and why it is refused
    "Abort": (Abort("alice", "bob", 9, restore_to=0), "alice may not send Abort: only the coordinator does"),
    "StartStep": (StartStep("alice", "bob", 9, mode="train", split="train", sample_ids=torch.arange(2)), "only the coordinator does"),
    "RelayRequest": (RelayRequest("alice", "bob", 9, destination="alice", route="peer"), "only the coordinator does"),
    "StepDone to a peer": (StepDone("alice", "bob", 2), "StepDone goes to the coordinator only"),
    "weights outside a relay": (_weights(0), "alice sent weights outside any relay the coordinator started (step 0)"),
    "a step not started": (_smashed(10_000_000), "alice sent Activation for step 10000000, which the coordinator has not started"),
    "not an edge": (_smashed(2, src="a", dst="s"), "alice sent smashed data along a -> s, not an edge of the plan"),
    "a gradient against the flow": (Gradient("alice", "bob", 2, src="a", dst="b", tensor=torch.ones(2, 3)), "along a -> b, not an edge"),
    "labels to a peer": (Labels("alice", "bob", 2, task="y", labels=torch.tensor([0, 1]), sample_ids=torch.arange(2)),
                         "the receiver should be 'server', which plays role 'server'"),
}


@pytest.mark.parametrize("case", list(ROGUE))
def test_a_message_off_the_plan_cuts_its_sender_off_and_never_arrives(hub, connect, case):
    message, why = ROGUE[case]
    alice, bob, _, at_bob = _peers(hub, connect)
    start_step(hub, 2)
    alice.send(message)
    assert why in _refused(alice, grpc.StatusCode.PERMISSION_DENIED).details
    hub.send(StepDone("coordinator", "bob", 3))
    bob.run_until(lambda: at_bob, timeout=TIMEOUT)
    assert [m.kind for m in at_bob] == ["StepDone"]  # the rogue message never reached bob
    bob.send(StepDone("bob", "coordinator", 7))
    assert run_until_hearing(hub, lambda: hub.received) == ["alice"]
    assert [(m.sender, m.step) for m in hub.received] == [("bob", 7)]


def test_weights_pass_only_in_the_relay_the_coordinator_asked_for_and_once(hub, connect):
    alice, bob, _, at_bob = _peers(hub, connect)
    hub.send(RelayRequest("coordinator", "alice", 5, destination="bob", route="peer"))
    for wrong, why in ((_weights(4), "outside any relay"), (_weights(5, receiver="server"), "takes them from alice to bob via bob")):
        with pytest.raises(RouteError, match=why):
            hub._routes.admit(wrong)  # what the hub would cut alice off for
    alice.send(_weights(5))
    alice.send(_weights(5))  # a second copy: the relay is over
    assert "outside any relay" in _refused(alice, grpc.StatusCode.PERMISSION_DENIED).details
    bob.run_until(lambda: at_bob, timeout=TIMEOUT)
    assert [(m.kind, m.step) for m in at_bob] == [("Weights", 5)]


def test_messages_of_an_aborted_attempt_are_dropped_not_punished(hub, connect):
    alice, bob, _, at_bob = _peers(hub, connect)
    start_step(hub, 2)
    hub.send(Abort("coordinator", "alice", 3, restore_to=0))
    alice.send(_smashed(2))  # sent before alice heard of the abort: honest, and void
    start_step(hub, 4)
    alice.send(_smashed(4))
    bob.run_until(lambda: at_bob, timeout=TIMEOUT)
    assert [m.step for m in at_bob] == [4] and hub.connected() == ["alice", "bob"]


def test_what_an_ended_stream_queued_is_never_delivered_or_blamed_on_the_next_connection(hub, connect):
    """A hostile session as alice queues a message the server refuses, and hangs up before it is
    delivered; alice's next (honest) connection is not cut off for it."""
    refused = []

    def server(message):
        refused.append(message)
        raise ProtocolError("server: no such step here")

    hub.register("server", server)
    start_step(hub, 2)
    hostile = connect("alice")
    hostile.send(_labels(2))
    hostile.send(StepDone("alice", "coordinator", 2))
    time.sleep(0.5)  # routed to the inbox, which nobody reads yet
    hostile.close()
    deadline = time.monotonic() + TIMEOUT
    while hub.connected() and time.monotonic() < deadline:  # until the hub has seen it hang up
        time.sleep(0.01)
    with pytest.raises(PartyLost) as lost:
        hub.run_until(lambda: False, timeout=TIMEOUT)
    assert (lost.value.party, lost.value.expelled) == ("alice", False), lost.value.reason
    assert refused == [] and hub.received == []  # died with their stream
    honest = connect("alice")
    honest.send(StepDone("alice", "coordinator", 5))
    hub.run_until(lambda: hub.received, timeout=TIMEOUT)
    assert [(m.sender, m.step) for m in hub.received] == [("alice", 5)] and hub.connected() == ["alice"]


def test_a_refusal_quotes_at_most_a_thousand_characters_of_what_was_sent(hub, connect):
    (alice, *_), name = _peers(hub, connect), "x" * (1 << 20)  # a 1 MiB node name
    start_step(hub, 2)
    alice.send(_smashed(2, src=name))
    details = _refused(alice, grpc.StatusCode.PERMISSION_DENIED).details
    full = f"alice sent smashed data along {name} -> b, not an edge of the plan"
    assert details == full[:1000] + f"… [{len(full) - 1000} more characters cut]"
    with pytest.raises(PartyLost) as lost:
        hub.run_until(lambda: False, timeout=TIMEOUT)
    assert lost.value.reason == details
