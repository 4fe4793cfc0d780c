"""Well-formed but wrong messages from an authenticated party, through a real hub to the server's
handlers: the offending stream is aborted with a clear gRPC error, and the hub goes on serving the
others, each case in bounded time.

The session: vanilla, 2 round-robin clients, the hub hosting the coordinator and the server party,
idle (no step started). ``client0`` misbehaves on a raw stream; ``client1`` then proves the hub
still routes both ways.
"""

import contextlib
import dataclasses
import queue
import threading
from collections.abc import Iterator

import grpc
import pytest
import torch
from hypothesis import Phase, given, settings
from hypothesis import strategies as st
from torch import nn

from splitlearn.data.dataset import ArrayDataset
from splitlearn.split import configs
from splitlearn.split import messages as m
from splitlearn.split.cast import build_parties
from splitlearn.split.simulation import Simulation
from splitlearn.transport.grpc import ClientTransport, HubTransport
from splitlearn.transport.proto import splitlearn_pb2 as pb
from splitlearn.transport.proto import splitlearn_pb2_grpc as pb_grpc
from splitlearn.transport.serde import Limits, message_to_proto

from ..conftest import assert_same, messages
from .conftest import TIMEOUT, run_until_hearing

CASE = settings(max_examples=25, deadline=3 * TIMEOUT * 1000, derandomize=True)
KNOWN = {"coordinator", "server", "client0", "client1"}
WIDTH = 16  # the activation the server expects: [batch, WIDTH] float32
# gRPC codes that tell a client what it did wrong (not a crash, a timeout or a dropped connection)
CLEAR = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED,
         grpc.StatusCode.NOT_FOUND, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.ABORTED}


def _split() -> configs.Split:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(8, WIDTH), nn.ReLU(), nn.Linear(WIDTH, WIDTH), nn.ReLU(), nn.Linear(WIDTH, 2))
    return configs.vanilla(model, [2])


def _hosted(transport) -> Simulation:
    """The coordinator and the server party of the session, on ``transport``."""
    split = _split()
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    cast = build_parties(split, train=ArrayDataset(x, (x[:, 0] > 0).long(), torch.arange(16)), clients=2)
    return Simulation(split, parties=cast, transport=transport, local={"server"})


class _Raw:
    """A stream sending Envelopes as given; stays open until closed."""

    def __init__(self, target: str, token: str) -> None:
        self._channel = grpc.insecure_channel(target, options=[("grpc.max_send_message_length", 64 << 20)])
        self._requests: queue.SimpleQueue = queue.SimpleQueue()
        self.call = pb_grpc.SplitLearningStub(self._channel).Session(
            iter(self._requests.get, None), metadata=[("authorization", f"Bearer {token}")], timeout=2 * TIMEOUT)

    def send(self, env: pb.Envelope) -> None:
        self._requests.put(env)

    def close(self) -> None:
        self._requests.put(None)
        self.call.cancel()
        self._channel.close()


@dataclasses.dataclass
class _Session:
    hub: HubTransport
    sim: Simulation
    offender: _Raw
    bystander: ClientTransport
    at_bystander: list


@contextlib.contextmanager
def _session() -> Iterator[_Session]:
    hub = HubTransport({"t-client0": "client0", "t-client1": "client1"}, plan=_split().plan, timeout=TIMEOUT)
    sim = _hosted(hub)
    target = f"127.0.0.1:{hub.start()}"
    offender, bystander = _Raw(target, "t-client0"), ClientTransport(timeout=TIMEOUT)
    try:
        at_bystander: list = []
        bystander.register("client1", at_bystander.append)
        bystander.connect(target, name="client1", token="t-client1")
        hub.wait_for_parties(["client1"], timeout=TIMEOUT)
        yield _Session(hub, sim, offender, bystander, at_bystander)
    finally:
        offender.close()
        bystander.close()
        hub.stop()


def _offend(env: pb.Envelope) -> tuple[grpc.StatusCode, str, list[m.Message]]:
    """Send ``env`` as client0, then check client1 is still served both ways. Returns the status
    that ended client0's stream and what the hub routed from client0."""
    with _session() as s:
        routed, settled = [], threading.Event()
        s.hub.observers.append(lambda msg: msg.sender == "client0" and (routed.append(msg), settled.set()))
        s.offender.call.add_done_callback(lambda _: settled.set())
        s.offender.send(env)
        assert settled.wait(TIMEOUT), "the hub neither routed nor refused the message"
        ids = torch.arange(3)
        s.bystander.send(m.Manifest("client1", "coordinator", -1, sample_ids={"train": ids}))
        lost = run_until_hearing(s.hub, lambda: "client1" in s.sim.coordinator.manifests)
        assert set(lost) <= {"client0"}, lost  # the coordinator hears that client0 was cut off
        assert torch.equal(s.sim.coordinator.manifests["client1"]["train"], ids)
        s.hub.send(m.StepDone("coordinator", "client1", 5))
        s.bystander.run_until(lambda: s.at_bystander, timeout=TIMEOUT)
        assert s.at_bystander == [m.StepDone("coordinator", "client1", 5)]
        code = s.offender.call.code()  # blocks until the stream ends: at the latest its deadline
        return code, s.offender.call.details(), routed


# -- refused by the hub itself ---------------------------------------------------------------------


def _as(message: m.Message, sender: str, receiver: str) -> m.Message:
    return dataclasses.replace(message, sender=sender, receiver=receiver)


def _refusal(code: grpc.StatusCode):
    return lambda message: (message_to_proto(message), code)


unknown_receiver = st.builds(_as, messages, st.just("client0"), st.text(min_size=1, max_size=12).filter(lambda r: r not in KNOWN))
impersonation = st.builds(_as, messages, st.text(min_size=1, max_size=12).filter(lambda s: s != "client0"), st.sampled_from(sorted(KNOWN)))


def _activation(tensor: torch.Tensor, *, src: str = "client", dst: str = "server", mode: str = "train") -> m.Activation:
    batch = tensor.shape[0] if tensor.dim() else 1
    return m.Activation("client0", "server", 1, mode=mode, src=src, dst=dst, tensor=tensor, sample_ids=torch.arange(batch))


@st.composite
def malformed(draw) -> pb.Envelope:
    """An Activation to the server that the decoder must refuse: a bad tensor or a wrong kind."""
    env = message_to_proto(_activation(torch.ones(4, WIDTH)))
    t, limit = env.activation.tensor, Limits().max_tensor_elements
    match draw(st.sampled_from(["huge dim", "huge numel", "many dims", "dtype", "short data", "NaN", "kind"])):
        case "huge dim":
            del t.shape[:]
            t.shape.extend([draw(st.integers(limit + 1, 2**62)), 0])
        case "huge numel":
            del t.shape[:]
            t.shape.extend([draw(st.integers(2**14, 2**30)), draw(st.integers(2**14, 2**30))])
        case "many dims":
            t.shape.extend([1] * draw(st.integers(7, 64)))
        case "dtype":
            t.dtype = draw(st.integers(9, 2**20))
        case "short data":
            t.data = t.data[: draw(st.integers(0, len(t.data) - 1))]
        case "NaN":
            t.data = b"\x00\x00\xc0\x7f" + t.data[4:]
        case "kind":
            env.header.kind = draw(st.sampled_from(["Gradient", "Weights", "StartStep", "Shutdown", ""]))
    return env


@CASE
@given(st.one_of(
    unknown_receiver.map(_refusal(grpc.StatusCode.NOT_FOUND)),
    impersonation.map(_refusal(grpc.StatusCode.PERMISSION_DENIED)),
    malformed().map(lambda env: (env, grpc.StatusCode.INVALID_ARGUMENT)),
))
def test_messages_the_hub_refuses_abort_only_their_stream(case):
    env, expected = case
    code, details, routed = _offend(env)
    assert (code, routed) == (expected, [])  # and nothing reached a handler
    assert details.startswith("client0 ") or details.startswith("malformed message from client0: "), details


# -- refused by the server's handlers --------------------------------------------------------------

steps = st.integers(-(2**63), 2**63 - 1)
wrong_step = st.builds(lambda step, tag: m.StepDone("client0", "coordinator", step, tag=tag),
                       steps.filter(lambda s: s != 0), st.sampled_from(["step", "relay"]))  # the coordinator is at step 0
# Kinds the coordinator never takes from a client (it takes Manifest and StepDone only).
wrong_kind_to_coordinator = st.builds(_as, messages.filter(lambda msg: msg.kind not in ("Manifest", "StepDone")),
                                      st.just("client0"), st.just("coordinator"))
# Kinds an idle server refuses from a client: no step has started, it relays nothing to itself,
# only the coordinator starts steps or relays, and it scores no outputs and has no task but "y".
wrong_kind_to_server = st.builds(_as, st.one_of(
    messages.filter(lambda msg: msg.kind in ("Gradient", "StepDone", "Manifest", "StartStep", "RelayRequest", "Output")),
    messages.filter(lambda msg: msg.kind == "Labels" and msg.task != "y"),
    messages.filter(lambda msg: msg.kind == "Weights").map(lambda msg: dataclasses.replace(msg, destination="server")),
), st.just("client0"), st.just("server"))


@st.composite
def wrong_activation(draw) -> m.Activation:
    """client0's activation for the server, on a wrong edge or with a wrong shape or dtype."""
    mode = draw(st.sampled_from(["train", "eval"]))
    batch = draw(st.integers(1, 8))
    match draw(st.sampled_from(["edge", "shape", "huge", "dtype"])):
        case "edge":
            src, dst = draw(st.tuples(st.text(min_size=1, max_size=8), st.text(min_size=1, max_size=8))
                            .filter(lambda e: e != ("client", "server")))
            return _activation(torch.ones(batch, WIDTH), src=src, dst=dst, mode=mode)
        case "shape":
            shape = draw(st.lists(st.integers(0, 20), min_size=0, max_size=4).filter(lambda s: not s or s[-1] != WIDTH))
            return _activation(torch.ones(shape), mode=mode)
        case "huge":  # within the wire limits, far from what the split expects
            return _activation(torch.ones(1, draw(st.integers(1 << 16, 1 << 20))), mode=mode)
        case "dtype":
            dtype = draw(st.sampled_from([torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32, torch.uint8, torch.bool]))
            return _activation(torch.ones(batch, WIDTH, dtype=dtype), mode=mode)


wrong_for_handlers = st.one_of(wrong_step, wrong_kind_to_coordinator, wrong_kind_to_server, wrong_activation())


@CASE
@given(wrong_for_handlers)
def test_the_handlers_refuse_these_messages(message):
    """The oracle for the next test: each drawn message makes the receiving handler raise, here
    called directly (in-process, nothing to attribute)."""

    class Direct:
        def __init__(self):
            self.handlers, self.observers = {}, []

        def register(self, name, handler):
            self.handlers[name] = handler

        def send(self, message):
            pass

    direct = Direct()
    _hosted(direct)
    with pytest.raises(RuntimeError):  # a ProtocolError, or torch refusing the tensor
        direct.handlers[message.receiver](message)


@settings(CASE, phases=[Phase.explicit, Phase.generate])  # each case is a whole session: no shrinking
@given(wrong_for_handlers)
def test_messages_the_handlers_refuse_abort_only_their_stream(message):
    code, details, routed = _offend(message_to_proto(message))
    if routed:  # it reached the handler, which refused it
        assert_same(routed[0], message)
        assert code in CLEAR and details, (code, details)
    else:  # the hub refused it first: off the plan's edges (see test_hub's ROGUE)
        assert code is grpc.StatusCode.PERMISSION_DENIED and details.startswith("client0 "), (code, details)
