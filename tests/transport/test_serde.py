import math
from dataclasses import fields

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from splitlearn.split import messages as m
from splitlearn.split.compression import CODECS, FLOATS, compress
from splitlearn.transport.proto import splitlearn_pb2 as pb
from splitlearn.transport.serde import (
    Limits,
    WireError,
    decode,
    encode,
    message_from_proto,
    message_to_proto,
    wire_overhead,
    wire_size,
)

from .conftest import DTYPES, PROPERTY, assert_same, messages, random_tensor


def activation(tensor: torch.Tensor, **header) -> m.Activation:
    ids = torch.arange(tensor.shape[0] if tensor.dim() else 1)
    return m.Activation("client-0", "server", 7, mode="train", src="bottom", dst="top", tensor=tensor, sample_ids=ids, **header)


@PROPERTY
@given(messages)
def test_round_trip(message):
    assert_same(decode(encode(message)), message)
    assert_same(message_from_proto(message_to_proto(message)), message)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [[], [0], [3, 0, 2], [2, 3], [1, 2, 3, 4]], ids=str)
def test_every_dtype_and_shape(dtype, shape):
    t = random_tensor(shape, dtype, seed=0)
    for message in (
        m.Gradient("s", "c", 1, src="top", dst="bottom", tensor=t),
        m.Weights("c", "s", 1, destination="d", state={"w": t, "v": t.clone()}, meta={"nodes": ["bottom"]}),
    ):
        assert_same(decode(encode(message)), message)


@pytest.mark.parametrize(
    "tensor",
    [
        torch.arange(24.0).reshape(2, 3, 4).transpose(0, 2),
        torch.arange(24.0).reshape(2, 3, 4)[:, ::2, 1:],
        torch.randn(2, 3, 4, 5).contiguous(memory_format=torch.channels_last),
        torch.arange(6.0).expand(4, 6),
        torch.ones(3, requires_grad=True) * 2,
        torch.zeros(3, 0, 4, dtype=torch.float16)[:, :, ::2],
        torch.arange(8, dtype=torch.int32).reshape(2, 4)[1:, 1::4],
        torch.arange(8.0)[5:],
    ],
    ids=["transposed", "sliced", "channels_last", "expanded", "requires_grad", "zero_size_strided", "size_one_strided", "offset"],
)
def test_non_contiguous_tensors_travel_as_their_values(tensor):
    out = decode(encode(activation(tensor))).tensor
    assert out.is_contiguous() and not out.requires_grad
    assert torch.equal(out, tensor.detach())


def test_every_kind_has_a_body_matching_its_fields():
    bodies = {f.message_type.name: f.message_type for f in pb.Envelope.DESCRIPTOR.oneofs_by_name["body"].fields}
    kinds = {cls.__name__: cls for cls in m.Message.__subclasses__() if cls.__module__ == m.__name__}
    assert set(bodies) == set(kinds)
    for kind, cls in kinds.items():
        assert [f.name for f in bodies[kind].fields] == [f.name for f in fields(cls)][3:]


def test_decoded_tensors_are_writable_and_own_their_memory():
    data = encode(activation(torch.zeros(2, 3)))
    out = decode(data)
    out.tensor.add_(1)
    assert torch.equal(decode(data).tensor, torch.zeros(2, 3))


def test_nonfinite_values_pass_where_allowed():
    t = torch.tensor([math.nan, math.inf, -math.inf, 1.0])
    labels = m.Labels("o", "s", 1, task="y", labels=t, sample_ids=torch.arange(4))
    assert decode(encode(labels), limits=Limits(finite_kinds=frozenset())).labels.view(torch.int32).equal(t.view(torch.int32))
    out = decode(encode(activation(t)), limits=Limits(finite_kinds=frozenset()))
    assert out.tensor.view(torch.int32).equal(t.view(torch.int32))


FINITE_FIELDS = {  # the checked kinds, each carrying t in the field its error names
    "Activation.tensor": lambda t: activation(t),
    "Gradient.tensor": lambda t: m.Gradient("s", "c", 1, src="top", dst="bottom", tensor=t),
    "Output.tensor": lambda t: m.Output("s", "c", 1, task="y", tensor=t, sample_ids=torch.arange(len(t))),
    "Labels.labels": lambda t: m.Labels("o", "s", 1, task="y", labels=t, sample_ids=torch.arange(len(t))),  # soft labels
    "Weights.state['w']": lambda t: m.Weights("c", "d", 1, destination="d", state={"b": torch.ones(2), "w": t}),
}


@PROPERTY
@given(st.sampled_from(FLOATS), st.sampled_from(list(FINITE_FIELDS)), st.integers(1, 40), st.data())
def test_nonfinite_values_are_refused_and_counted(dtype, where, n, data):
    t = random_tensor([n], dtype, seed=n)
    bad = data.draw(st.lists(st.integers(0, n - 1), unique=True, max_size=n))
    values = data.draw(st.lists(st.sampled_from([math.nan, math.inf, -math.inf]), min_size=len(bad), max_size=len(bad)))
    for i, v in zip(bad, values):
        t[i] = v
    message = FINITE_FIELDS[where](t)
    if not bad:
        assert_same(decode(encode(message)), message)
        return
    nans = sum(math.isnan(v) for v in values)
    expected = f"{where}: holds NaN or Inf ({len(bad)} of {n} values: {nans} NaN, {len(bad) - nans} Inf)"
    with pytest.raises(WireError) as e:
        decode(encode(message))
    assert str(e.value) == expected
    with pytest.raises(WireError) as e:  # the same check on an Envelope as gRPC hands it over
        message_from_proto(message_to_proto(message))
    assert str(e.value) == expected


@pytest.mark.parametrize("dtype", FLOATS, ids=str)
def test_extreme_finite_values_pass(dtype):
    info = torch.finfo(dtype)
    t = torch.tensor([info.max, -info.max, info.tiny, info.tiny / 4, -0.0, 0.0, info.eps], dtype=dtype)
    for make in FINITE_FIELDS.values():
        message = make(t)
        assert_same(decode(encode(message)), message)


# -- exact bytes -----------------------------------------------------------------------------------


def test_golden_bytes():
    # Pinned: a change here breaks compatibility with every peer already deployed.
    assert encode(m.StepDone("a", "b", 1)).hex() == "0a120a01611201621801220853746570446f6e6542020801"
    grad = m.Gradient("c", "s", 2, src="t", dst="b", tensor=torch.tensor([1.0, -2.0]))
    assert encode(grad).hex() == (
        "0a120a0163120173180222084772616469656e74"  # header: c -> s, step 2, kind Gradient
        "2a170a01741201621a0f08031201021a08"  # body: src t, dst b, float32 of shape [2], 8 bytes
        "0000803f000000c0"  # 1.0 and -2.0, raw little-endian
    )


def test_golden_bytes_of_compressed_gradients():
    # Pinned like the raw form above, which compressed tensors leave unchanged (encoding 0 is not written).
    head = "0a120a0163120173180222084772616469656e74"  # header: c -> s, step 2, kind Gradient
    int8 = m.Gradient("c", "s", 2, src="t", dst="b", tensor=compress(torch.tensor([1.0, -2.0]), "int8"))
    # Range [-2, 1] in 255 steps: scale 3/255 (as float32), zero point 170; 1.0 -> 255, -2.0 -> 0.
    assert encode(int8).hex() == head + (
        "2a1f0a01741201621a17"  # body: src t, dst b, a tensor of 23 bytes:
        "0803120102"  # float32 of shape [2] (the decoded tensor)
        "1a02ff00"  # data: q = 255, 0
        "2002"  # encoding INT8
        "29000000201818883f"  # scale, a double: 0.0117647061124444
        "30aa01"  # zero point 170
    )
    topk = m.Gradient("c", "s", 2, src="t", dst="b", tensor=compress(torch.tensor([[0.5, -3.0], [1.0, 0.25]]), "topk", ratio=0.5))
    assert encode(topk).hex() == head + (
        "2a240a01741201621a1c" "080312020202"  # float32 of shape [2, 2]; one value of each sample kept
        "1a08000040c00000803f"  # data: -3.0 and 1.0
        "2003"  # encoding TOPK
        "3a080100000002000000"  # indices: flat positions 1 and 2, int32
    )
    fp16 = m.Gradient("c", "s", 2, src="t", dst="b", tensor=compress(torch.tensor([1.0, -2.0]), "fp16"))
    assert encode(fp16).hex() == head + "2a150a01741201621a0d" "0803120102" "1a04003c00c0" "2001"


@pytest.mark.parametrize("codec", CODECS)
@pytest.mark.parametrize("dtype", FLOATS, ids=str)
@pytest.mark.parametrize("shape", [[], [0], [3, 0, 2], [1], [2, 3], [1, 2, 3, 4]], ids=str)
def test_compressed_tensors_round_trip(codec, dtype, shape):
    c = compress(random_tensor(shape, dtype, seed=0), codec, ratio=0.5)
    n = shape[0] if shape else 1
    for message in (
        m.Gradient("s", "c", 1, src="top", dst="bottom", tensor=c),
        m.Activation("c", "s", 1, mode="eval", src="bottom", dst="top", tensor=c, sample_ids=torch.arange(n)),
    ):
        out = decode(encode(message))
        assert_same(out, message)
        assert torch.equal(out.tensor.decode(), c.decode())
        assert out.payload_bytes == message.payload_bytes


@pytest.mark.parametrize("codec", CODECS)
def test_compressed_bytes_travel_as_sent(codec):
    c = compress(torch.randn(16, 8), codec, ratio=0.25)
    data = encode(m.Gradient("s", "c", 1, src="top", dst="bottom", tensor=c))
    assert c.values.numpy().tobytes() in data
    assert c.indices is None or c.indices.numpy().tobytes() in data
    assert len(data) - c.nbytes <= 70  # header, names, shape, tags and lengths, scale and zero point only


def test_tensor_bytes_travel_raw():
    t = torch.randn(8, 5, dtype=torch.float64)
    assert t.numpy().tobytes() in encode(activation(t))


@pytest.mark.parametrize("shape", [[64, 32, 4, 4], [64, 512], [256, 3, 32, 32], [1, 1]], ids=str)
def test_wire_size_is_payload_plus_a_small_header(shape):
    message = activation(torch.randn(shape))
    overhead = wire_overhead(message)
    assert wire_size(message) == len(encode(message)) == overhead.wire_bytes
    assert overhead.payload_bytes == message.payload_bytes
    # Header, field tags and varint lengths only: 60 bytes plus the names, whatever the tensor size.
    names = sum(map(len, ("client-0", "server", "Activation", "bottom", "top")))
    assert 0 < overhead.wire_bytes - overhead.payload_bytes <= 60 + names


def test_typical_activation_overhead_ratio():
    overhead = wire_overhead(activation(torch.randn(64, 32, 4, 4)))
    assert overhead.ratio <= 1.02
    assert overhead.wire_bytes / (64 * 32 * 4 * 4 * 4) <= 1.02  # against the activation alone, ids aside


def test_ratio_of_a_message_without_tensor_data():
    assert wire_overhead(m.StepDone("a", "b", 1)).ratio == math.inf


def test_encoding_is_deterministic():
    message = m.Weights("a", "b", 1, destination="d", state={"z": torch.ones(2), "a": torch.zeros(1)}, meta={"b": 1, "a": 2})
    assert encode(message) == encode(message)
    assert list(decode(encode(message)).state) == ["z", "a"]


# -- what cannot go on the wire --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("message", "problem"),
    [
        (activation(torch.zeros(2, dtype=torch.complex64)), r"Activation\.tensor: dtype torch\.complex64 cannot go"),
        (activation(torch.zeros(2, dtype=torch.int16)), r"dtype torch\.int16 cannot go"),
        (m.Activation("a", "b", 1, mode="test", src="x", dst="y", tensor=torch.ones(1), sample_ids=torch.arange(1)),
         r"Activation\.mode: 'test' is not one of train, eval"),
        (m.RelayRequest("a", "b", 1, destination="c", route="air"), r"RelayRequest\.route: 'air'"),
        (m.StepDone("a", "b", 1, tag="done"), r"StepDone\.tag: 'done'"),
        (m.Weights("a", "b", 1, destination="c", state={}, meta={"f": object()}), r"Weights\.meta: not JSON-serialisable"),
        (m.Weights("a", "b", 1, destination="c", state={}, meta={"lr": math.nan}), r"Weights\.meta: not JSON-serialisable"),
        (m.Weights("a", "b", 1, destination="c", state={"w": torch.zeros(1, dtype=torch.int8)}),
         r"Weights\.state\['w'\]: dtype torch\.int8"),
        (m.Message("a", "b", 1), "not a splitlearn message kind"),
        (m.Output("a", "b", 1, task="y", tensor=compress(torch.ones(2), "int8"), sample_ids=torch.arange(2)),
         r"Output\.tensor: only the tensor of an Activation or a Gradient may be compressed"),
        (m.Labels("a", "b", 1, task="y", labels=compress(torch.ones(2), "fp16"), sample_ids=torch.arange(2)),
         r"Labels\.labels: only the tensor of an Activation or a Gradient may be compressed"),
    ],
)
def test_encode_rejects_what_the_wire_cannot_carry(message, problem):
    with pytest.raises(WireError, match=problem):
        encode(message)


def test_large_finite_values_whose_sum_overflows_pass():
    """The NaN/Inf check sums first; a sum that overflows must not refuse finite values."""
    big = torch.full((4, 8), torch.finfo(torch.float32).max)
    assert torch.equal(decode(encode(activation(big))).tensor, big)
