"""Routing, authentication and validation at the hub: a misbehaving stream is cut, others go on."""

import threading
import time

import grpc
import pytest
import torch

from splitlearn.split.messages import Activation, Gradient, NonFinite, ProtocolError, StepDone
from splitlearn.split.transport import MessageLog, PartyLost
from splitlearn.transport.grpc import RateLimit, StreamClosed
from splitlearn.transport.proto import splitlearn_pb2 as pb
from splitlearn.transport.proto import splitlearn_pb2_grpc as pb_grpc
from splitlearn.transport.serde import message_to_proto

from .conftest import TIMEOUT, run_until_hearing


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


def test_routes_to_local_endpoints_remote_parties_and_peers(hub, connect):
    log = MessageLog()
    hub.observers.append(log)
    alice, bob = connect("alice"), connect("bob")
    hub.wait_for_parties(["alice", "bob"], timeout=TIMEOUT)
    at_alice, at_bob = [], []
    alice.register("alice", at_alice.append)
    bob.register("bob", at_bob.append)
    alice.send(StepDone("alice", "coordinator", 1))
    alice.send(StepDone("alice", "bob", 2))  # peer to peer, through the hub
    hub.send(StepDone("coordinator", "alice", 3))
    hub.run_until(lambda: hub.received)
    bob.run_until(lambda: at_bob)
    alice.run_until(lambda: at_alice)
    assert [(m.sender, m.receiver, m.step) for m in hub.received] == [("alice", "coordinator", 1)]
    assert (at_bob, at_alice) == ([StepDone("alice", "bob", 2)], [StepDone("coordinator", "alice", 3)])
    assert sorted(r.step for r in log.records) == [1, 2, 3]  # the hub observes every message once


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


# -- rate limits -----------------------------------------------------------------------------------


def _steps_from(hub, name: str) -> list[int]:
    return [m.step for m in hub.received if m.sender == name]


@pytest.mark.parametrize("hub", [{"rate": RateLimit(messages_per_s=50, burst_messages=20)}], indirect=True)
def test_a_flooding_client_is_cut_off_while_a_paced_one_goes_on(hub, connect):
    alice, bob = connect("alice"), connect("bob")
    hub.wait_for_parties(["alice", "bob"], timeout=TIMEOUT)
    at_bob = []
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
    from_alice = _steps_from(hub, "alice")
    assert from_alice == list(range(len(from_alice)))  # what got through came in order, then nothing
    assert 20 <= len(from_alice) <= 20 + 50 * elapsed


def _gradient(step: int, numel: int) -> Gradient:
    return Gradient("alice", "coordinator", step, src="a", dst="b", tensor=torch.ones(numel))


@pytest.mark.parametrize("hub", [{"rate": RateLimit(bytes_per_s=10_000, burst_bytes=10_000)}], indirect=True)
@pytest.mark.parametrize(("numel", "problem"), [
    (1000, "more than 10000 bytes/s (burst 10000)"),  # 4 kB each: the third is over
    (3000, "a message of {size} bytes is larger than the byte burst of 10000"),  # 12 kB: even the first
])
def test_bytes_per_second_are_limited(hub, connect, numel, problem):
    alice, size = connect("alice"), message_to_proto(_gradient(0, numel)).ByteSize()
    start = time.monotonic()
    for step in range(10):
        alice.send(_gradient(step, numel))
    details = _refused(alice, grpc.StatusCode.RESOURCE_EXHAUSTED).details
    elapsed = time.monotonic() - start
    assert details == f"alice exceeded its rate limit: {problem.format(size=size)}"
    _bob_still_served(hub, connect)
    assert size * len(_steps_from(hub, "alice")) <= 10_000 + 10_000 * elapsed


def test_the_party_an_endpoint_blames_is_cut_off_not_the_sender(hub, connect):
    """A step completed by alice's message is refused because of bob's input (e.g. smashed data
    that made it non-finite): bob's stream is cut with the reason, alice goes on."""

    why = "server: step 3 would make its loss NaN or Inf; refused and rolled back (caused by the input of bob)"

    def server(message):
        raise NonFinite(why, party="bob")

    hub.register("server", server)
    alice, bob = connect("alice"), connect("bob")
    hub.wait_for_parties(["alice", "bob"], timeout=TIMEOUT)
    alice.send(StepDone("alice", "server", 3))
    with pytest.raises(PartyLost) as lost:
        hub.run_until(lambda: False, timeout=TIMEOUT)
    assert (lost.value.party, lost.value.expelled) == ("bob", True)
    assert lost.value.reason == f"StepDone of step 3 refused: {why}"
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
