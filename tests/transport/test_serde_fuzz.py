"""Untrusted input: decode yields a valid message or a WireError naming the problem, nothing else."""

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from splitlearn.split import messages as m
from splitlearn.split.compression import compress
from splitlearn.transport.proto import splitlearn_pb2 as pb
from splitlearn.transport.serde import Limits, WireError, decode, encode, message_from_proto, message_to_proto

from .conftest import PROPERTY, assert_same, messages

IDS = torch.arange(4)
VALID = [
    m.Manifest("c", "k", -1, sample_ids={"train": IDS, "test": IDS + 4}),
    m.StartStep("k", "c", 3, mode="train", split="train", sample_ids=IDS, bindings={"client": "c", "server": "s"}),
    m.Activation("c", "s", 3, mode="eval", src="bottom", dst="top", tensor=torch.randn(4, 3), sample_ids=IDS),
    m.Gradient("s", "c", 3, src="top", dst="bottom", tensor=torch.randn(4, 3)),
    m.Labels("c", "s", 3, task="y", labels=torch.tensor([0, 1, 1, 0]), sample_ids=IDS),
    m.Output("s", "c", 3, task="y", tensor=torch.randn(4, 2, dtype=torch.float16), sample_ids=IDS),
    m.StepDone("c", "k", 3, tag="relay"),
    m.RelayRequest("k", "c", 4, destination="c2", route="peer"),
    m.Weights("c", "c2", 4, destination="c2", state={"w": torch.randn(3, 2), "n": torch.tensor(5)}, meta={"lr": 0.1}),
    m.Abort("k", "c", 9, restore_to=0),
    m.ScoreRequest("k", "c", 9, split="test"),
    m.Scores("c", "k", 9, split="test", meta={"y": {"count": 4, "correct": 3, "loss_sum": 1.5}}),
]
COMPRESSED = {  # Gradients whose tensor travels compressed, by codec (topk: 2 of 3 values a sample, 8 in all)
    codec: m.Gradient("s", "c", 3, src="top", dst="bottom", tensor=compress(torch.randn(4, 3), codec, ratio=0.5))
    for codec in ("fp16", "int8", "topk")
}
VALID += list(COMPRESSED.values())
ENCODED = [encode(v) for v in VALID]


def decode_or_reject(data: bytes) -> m.Message | WireError:
    """Decode must succeed with a message that encodes again, or raise WireError; nothing else.
    Returns the message or the error."""
    try:
        message = decode(data)
    except WireError as e:
        assert str(e) and e.__cause__ is None
        return e
    assert_same(decode(encode(message)), message)
    return message


@PROPERTY
@given(st.binary(max_size=300))
def test_random_bytes(data):
    assert isinstance(decode_or_reject(data), (m.Message, WireError))


@st.composite
def mutated(draw) -> bytes:
    data = bytearray(draw(st.sampled_from(ENCODED)))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(data)))
        match draw(st.sampled_from(["set", "insert", "delete", "truncate"])):
            case "set" if i < len(data):
                data[i] = draw(st.integers(0, 255))
            case "insert":
                data[i:i] = draw(st.binary(min_size=1, max_size=8))
            case "delete":
                del data[i : i + draw(st.integers(1, 8))]
            case "truncate":
                del data[i:]
    return bytes(data)


@PROPERTY
@given(mutated())
def test_mutated_encodings(data):
    assert isinstance(decode_or_reject(data), (m.Message, WireError))


@PROPERTY
@given(messages, st.integers(0, 2**31), st.integers(0, 255))
def test_byte_flips_in_random_messages(message, at, value):
    data = bytearray(encode(message))
    if data:
        data[at % len(data)] = value
    assert isinstance(decode_or_reject(bytes(data)), (m.Message, WireError))


def test_valid_messages_decode():
    for message, data in zip(VALID, ENCODED):
        assert_same(decode(data), message)


# -- well-formed protobuf, wrong message -----------------------------------------------------------


def envelope(kind: type[m.Message]) -> pb.Envelope:
    return message_to_proto(next(v for v in VALID if type(v) is kind))


def edited(kind: type[m.Message], edit) -> bytes:
    env = envelope(kind)
    edit(env)
    return env.SerializeToString()


def set_shape(t: pb.Tensor, shape: list[int]) -> None:
    del t.shape[:]
    t.shape.extend(shape)


def with_floats(kind, field, values):
    def edit(env):
        t = getattr(getattr(env, env.WhichOneof("body")), field)
        t.dtype, t.data = pb.DTYPE_FLOAT32, torch.tensor(values, dtype=torch.float32).numpy().tobytes()
        set_shape(t, [len(values)])

    return edited(kind, edit)


def state_entry(env: pb.Envelope) -> pb.Tensor:
    return env.weights.state.entries[0].tensor


def compressed(codec: str, edit) -> bytes:
    env = message_to_proto(COMPRESSED[codec])
    edit(env.gradient.tensor)
    return env.SerializeToString()


def int32s(*values: int) -> bytes:
    return torch.tensor(values, dtype=torch.int32).numpy().tobytes()


def with_encoding(kind, field, encoding):
    def edit(env):
        getattr(getattr(env, env.WhichOneof("body")), field).encoding = encoding

    return edited(kind, edit)


CASES = {
    "garbage": (b"\xff\xff\xff", "not a splitlearn Envelope"),
    "empty": (b"", "missing header"),
    "unknown kind": (edited(m.StepDone, lambda e: setattr(e.header, "kind", "Shutdown")), "unknown message kind 'Shutdown'"),
    "kind vs body": (edited(m.StepDone, lambda e: setattr(e.header, "kind", "Gradient")), "header says Gradient but the body is step_done"),
    "no body": (edited(m.StepDone, lambda e: e.ClearField("step_done")), "header says StepDone but the body is missing"),
    "no sender": (edited(m.Gradient, lambda e: setattr(e.header, "sender", "")), "Gradient: missing header field sender"),
    "no receiver": (edited(m.Gradient, lambda e: setattr(e.header, "receiver", "")), "missing header field receiver"),
    "no tensor": (edited(m.Gradient, lambda e: e.gradient.ClearField("tensor")), r"Gradient\.tensor: missing tensor"),
    "no src": (edited(m.Activation, lambda e: setattr(e.activation, "src", "")), r"Activation\.src: missing"),
    "no mode": (edited(m.Activation, lambda e: setattr(e.activation, "mode", 0)), r"Activation\.mode: missing \(expected train or eval\)"),
    "bad mode": (edited(m.StartStep, lambda e: setattr(e.start_step, "mode", 7)), r"StartStep\.mode: unknown value 7 \(expected train or eval\)"),
    "bad route": (edited(m.RelayRequest, lambda e: setattr(e.relay_request, "route", 3)), r"RelayRequest\.route: unknown value 3 \(expected peer or server\)"),
    "abort ahead": (edited(m.Abort, lambda e: setattr(e.abort, "restore_to", 9)), r"Abort\.restore_to: 9 is not a step before this one \(9\)"),
    "abort negative": (edited(m.Abort, lambda e: setattr(e.abort, "restore_to", -2)), r"Abort\.restore_to: -2 is not a step before this one"),
    "bad tag": (edited(m.StepDone, lambda e: setattr(e.step_done, "tag", 9)), r"StepDone\.tag: unknown value 9 \(expected step or relay or abort\)"),
    "no dtype": (edited(m.Gradient, lambda e: setattr(e.gradient.tensor, "dtype", 0)), r"Gradient\.tensor: bad dtype 0"),
    "bad dtype": (edited(m.Gradient, lambda e: setattr(e.gradient.tensor, "dtype", 42)), r"Gradient\.tensor: bad dtype 42"),
    "short data": (edited(m.Gradient, lambda e: setattr(e.gradient.tensor, "data", e.gradient.tensor.data[:-1])),
                   r"Gradient\.tensor: 47 bytes, but shape \[4, 3\] of torch\.float32 needs 48"),
    "shape vs data": (edited(m.Gradient, lambda e: set_shape(e.gradient.tensor, [4, 4])), r"48 bytes, but shape \[4, 4\] .* needs 64"),
    "negative dim": (edited(m.Gradient, lambda e: set_shape(e.gradient.tensor, [-4, -3])), r"Gradient\.tensor: bad shape \[-4, -3\]"),
    "absurd dim": (edited(m.Gradient, lambda e: set_shape(e.gradient.tensor, [0, 2**62])), r"bad shape \[0, 4611686018427387904\]"),
    "absurd numel": (edited(m.Gradient, lambda e: set_shape(e.gradient.tensor, [2**20, 2**20])), r"1099511627776 elements, more than the limit"),
    "too many dims": (edited(m.Gradient, lambda e: set_shape(e.gradient.tensor, [1] * 9)), r"9 dims, more than the limit of 8"),
    "bool bytes": (edited(m.Labels, lambda e: e.labels.labels.CopyFrom(pb.Tensor(dtype=pb.DTYPE_BOOL, shape=[2], data=b"\x01\x02"))),
                   r"Labels\.labels: bool tensor holds bytes other than 0 and 1"),
    "NaN activation": (with_floats(m.Activation, "tensor", [1.0, math.nan]), r"Activation\.tensor: holds NaN or Inf \(1 of 2 values: 1 NaN, 0 Inf\)"),
    "Inf gradient": (with_floats(m.Gradient, "tensor", [math.inf]), r"Gradient\.tensor: holds NaN or Inf \(1 of 1 values: 0 NaN, 1 Inf\)"),
    "-Inf output": (with_floats(m.Output, "tensor", [-math.inf]), r"Output\.tensor: holds NaN or Inf \(1 of 1 values: 0 NaN, 1 Inf\)"),
    "NaN weights": (edited(m.Weights, lambda e: setattr(state_entry(e), "data", b"\x00\x00\xc0\x7f" * 6)),
                    r"Weights\.state\['w'\]: holds NaN or Inf \(6 of 6 values: 6 NaN, 0 Inf\)"),
    "float ids": (edited(m.Labels, lambda e: setattr(e.labels.sample_ids, "dtype", pb.DTYPE_FLOAT64)),
                  r"Labels\.sample_ids: sample ids must be a 1-D int64 tensor, got torch\.float64"),
    "2-D ids": (edited(m.Activation, lambda e: set_shape(e.activation.sample_ids, [2, 2])), r"Activation\.sample_ids: .* shape \[2, 2\]"),
    "manifest ids": (edited(m.Manifest, lambda e: set_shape(e.manifest.sample_ids.entries[1].tensor, [2, 2])),
                     r"Manifest\.sample_ids\['test'\]: .* got torch\.int64 of shape \[2, 2\]"),
    "map entry": (edited(m.Weights, lambda e: e.weights.state.entries[0].ClearField("tensor")),
                  r"Weights\.state\['w'\]: missing tensor"),
    "duplicate key": (edited(m.Manifest, lambda e: setattr(e.manifest.sample_ids.entries[1], "key", "train")),
                      r"Manifest\.sample_ids: duplicate keys \['train'\]"),
    "duplicate role": (edited(m.StartStep, lambda e: setattr(e.start_step.bindings[1], "role", "client")),
                       r"StartStep\.bindings: duplicate keys \['client'\]"),
    "empty binding": (edited(m.StartStep, lambda e: setattr(e.start_step.bindings[0], "party", "")),
                      r"StartStep\.bindings: a binding misses its role or party"),
    "meta syntax": (edited(m.Weights, lambda e: setattr(e.weights, "meta", "{'lr': 0.1}")), r"Weights\.meta: not JSON"),
    "meta NaN": (edited(m.Weights, lambda e: setattr(e.weights, "meta", '{"lr": NaN}')), r"Weights\.meta: not JSON: NaN is not JSON"),
    "meta overflow": (edited(m.Weights, lambda e: setattr(e.weights, "meta", '{"lr": -1e999}')), r"Weights\.meta: not JSON: -1e999 overflows"),
    "meta nesting": (edited(m.Weights, lambda e: setattr(e.weights, "meta", "[" * 100_000)), r"Weights\.meta: not JSON"),
    "meta list": (edited(m.Weights, lambda e: setattr(e.weights, "meta", "[1]")), r"Weights\.meta: expected a JSON object, got list"),
    "meta empty": (edited(m.Weights, lambda e: setattr(e.weights, "meta", "")), r"Weights\.meta: not JSON"),
    # Compressed tensors: only at the cut, self-consistent, within bounds.
    "bad encoding": (compressed("int8", lambda t: setattr(t, "encoding", 9)), r"Gradient\.tensor: unknown encoding 9 \(known: raw, fp16, int8, topk\)"),
    "compressed ids": (with_encoding(m.Activation, "sample_ids", pb.ENCODING_FLOAT16),
                       r"Activation\.sample_ids: only the tensor of an Activation or a Gradient may be compressed"),
    "compressed labels": (with_encoding(m.Labels, "labels", pb.ENCODING_INT8), r"Labels\.labels: only the tensor of an Activation or a Gradient"),
    "compressed output": (with_encoding(m.Output, "tensor", pb.ENCODING_FLOAT16), r"Output\.tensor: only the tensor of an Activation"),
    "compressed state": (edited(m.Weights, lambda e: setattr(state_entry(e), "encoding", pb.ENCODING_TOPK)),
                         r"Weights\.state\['w'\]: only the tensor of an Activation or a Gradient may be compressed"),
    "raw with scale": (edited(m.Gradient, lambda e: setattr(e.gradient.tensor, "scale", 0.5)),
                       r"Gradient\.tensor: a raw tensor carries no scale, zero point or indices"),
    "raw with indices": (edited(m.Gradient, lambda e: setattr(e.gradient.tensor, "indices", b"\x00" * 4)), r"a raw tensor carries no"),
    "int8 of ints": (compressed("int8", lambda t: setattr(t, "dtype", pb.DTYPE_INT64)), r"Gradient\.tensor: int8 encodes floating tensors, not torch\.int64"),
    "int8 short": (compressed("int8", lambda t: setattr(t, "data", t.data[:-1])),
                   r"Gradient\.tensor: int8 data of 11 bytes, but \[4, 3\] values of torch\.uint8 need 12"),
    "int8 shape": (compressed("int8", lambda t: set_shape(t, [4, 4])), r"int8 data of 12 bytes, but \[4, 4\] values of torch\.uint8 need 16"),
    "int8 NaN scale": (compressed("int8", lambda t: setattr(t, "scale", math.nan)), r"Gradient\.tensor: int8 scale must be finite and > 0, got nan"),
    "int8 Inf scale": (compressed("int8", lambda t: setattr(t, "scale", math.inf)), r"int8 scale must be finite and > 0, got inf"),
    "int8 zero scale": (compressed("int8", lambda t: setattr(t, "scale", 0.0)), r"int8 scale must be finite and > 0, got 0\.0"),
    "int8 negative scale": (compressed("int8", lambda t: setattr(t, "scale", -1.0)), r"int8 scale must be finite and > 0, got -1\.0"),
    "int8 zero point": (compressed("int8", lambda t: setattr(t, "zero_point", 256)), r"int8 zero point must lie in \[0, 255\], got 256"),
    "int8 huge scale": (compressed("int8", lambda t: setattr(t, "scale", 1e300)),
                        r"Gradient\.tensor: int8 scale 1e\+300 with zero point \d+ decodes beyond the finite range of torch\.float32"),
    "int8 indices": (compressed("int8", lambda t: setattr(t, "indices", int32s(0))), r"Gradient\.tensor: int8 carries no positions"),
    "fp16 scale": (compressed("fp16", lambda t: setattr(t, "scale", 2.0)), r"Gradient\.tensor: fp16 carries no scale or zero point"),
    "fp16 NaN": (compressed("fp16", lambda t: setattr(t, "data", b"\x00\x7e" + t.data[2:])), r"Gradient\.tensor: holds NaN or Inf"),
    "fp16 Inf": (compressed("fp16", lambda t: setattr(t, "data", b"\x00\x7c" + t.data[2:])), r"Gradient\.tensor: holds NaN or Inf"),
    "fp16 long": (compressed("fp16", lambda t: setattr(t, "data", t.data + b"\x00\x00")), r"fp16 data of 26 bytes, but \[4, 3\] values of torch\.float16 need 24"),
    "topk index high": (compressed("topk", lambda t: setattr(t, "indices", t.indices[:-4] + int32s(12))),
                        r"Gradient\.tensor: topk positions must lie in \[0, 12\), got \d+\.\.12"),
    "topk index negative": (compressed("topk", lambda t: setattr(t, "indices", int32s(-5) + t.indices[4:])), r"topk positions must lie in \[0, 12\), got -5"),
    "topk repeated": (compressed("topk", lambda t: setattr(t, "indices", int32s(*[3] * 8))), r"topk positions must be strictly increasing"),
    "topk unsorted": (compressed("topk", lambda t: setattr(t, "indices", int32s(*reversed(range(8))))), r"topk positions must be strictly increasing"),
    "topk ragged": (compressed("topk", lambda t: setattr(t, "indices", t.indices[:-1])), r"topk positions take 31 bytes, not a multiple of 4"),
    "topk values": (compressed("topk", lambda t: setattr(t, "data", t.data[:-4])), r"topk data of 28 bytes, but \[8\] values of torch\.float32 need 32"),
    "topk k > numel": (compressed("topk", lambda t: set_shape(t, [2, 2])), r"topk keeps 8 values of a tensor of 4 elements"),
    "topk NaN": (compressed("topk", lambda t: setattr(t, "data", b"\x00\x00\xc0\x7f" + t.data[4:])), r"Gradient\.tensor: holds NaN or Inf"),
    "topk absurd shape": (compressed("topk", lambda t: set_shape(t, [2**20, 2**20])), r"1099511627776 elements, more than the limit"),
    "topk zero point": (compressed("topk", lambda t: setattr(t, "zero_point", 3)), r"topk carries no scale or zero point"),
}


@pytest.mark.parametrize(("data", "problem"), CASES.values(), ids=CASES.keys())
def test_wrong_messages_are_rejected_by_name(data, problem):
    with pytest.raises(WireError, match=problem) as caught:
        decode(data)
    assert caught.value.__cause__ is None


def test_limits():
    data = encode(VALID[2])
    with pytest.raises(WireError, match=rf"message of {len(data)} bytes exceeds the limit of 100"):
        decode(data, limits=Limits(max_message_bytes=100))
    with pytest.raises(WireError, match=r"Activation\.tensor: 12 elements, more than the limit of 10"):
        decode(data, limits=Limits(max_tensor_elements=10))
    with pytest.raises(WireError, match=r"Activation\.tensor: 2 dims, more than the limit of 1"):
        decode(data, limits=Limits(max_dims=1))
    # A compressed tensor decodes to no more than a raw message may carry: 4 x 3 float32 = 48 bytes.
    # (As gRPC hands it over: the transport has checked the message's own size.)
    topk = message_to_proto(COMPRESSED["topk"])
    with pytest.raises(WireError, match=r"Gradient\.tensor: decodes to 48 bytes, more than the limit of 47"):
        message_from_proto(topk, limits=Limits(max_message_bytes=47))
    assert message_from_proto(topk, limits=Limits(max_message_bytes=48)).tensor.decode().shape == (4, 3)
    nan = with_floats(m.Activation, "tensor", [math.nan])
    assert math.isnan(decode(nan, limits=Limits(finite_kinds=frozenset())).tensor.item())
    with pytest.raises(WireError, match=r"Labels\.labels: holds NaN"):
        decode(with_floats(m.Labels, "labels", [math.nan]), limits=Limits(finite_kinds=frozenset({"Labels"})))
