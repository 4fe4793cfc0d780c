"""Wire format: :mod:`splitlearn.split.messages` to and from protobuf ``Envelope`` bytes.

One ``Envelope`` (``proto/splitlearn.proto``) carries one message: a header and a body per kind.
Tensors travel as raw little-endian bytes of a whitelisted dtype with their shape; metadata travels
as JSON text. Nothing is unpickled or evaluated. The tensor of an Activation or a Gradient may
travel compressed (:mod:`splitlearn.split.compression`): it is encoded as a ``Tensor`` with an
``encoding`` and decoded back to the same :class:`~splitlearn.split.compression.Compressed` value,
which the receiving party expands.

:func:`decode` treats its input as untrusted: anything but a well-formed message within
:class:`Limits` raises :class:`WireError`, whose text names the field and the problem.
:func:`message_from_proto` runs the same checks on an already parsed ``Envelope`` (as gRPC hands
over), except the byte limit, which such a transport enforces itself. A compressed tensor must not
decode to more than that byte limit either: a few bytes of topk cannot make the receiver allocate
more than a raw message could.

Decoding copies the ``bytes`` protobuf hands out for a tensor once more, into a ``bytearray`` that
``torch.frombuffer`` wraps without copying: the tensor is then writable and owns its memory, which
wrapping the immutable ``bytes`` directly would not give.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from collections import Counter
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch
from google.protobuf.message import DecodeError

from splitlearn.split import messages as m
from splitlearn.split.compression import COMPRESSIBLE, Compressed
from splitlearn.transport.proto import splitlearn_pb2 as pb

__all__ = [
    "Limits",
    "WireError",
    "WireOverhead",
    "decode",
    "encode",
    "message_from_proto",
    "message_to_proto",
    "wire_overhead",
    "wire_size",
]

if sys.byteorder != "little":  # tensors are written as the host's raw bytes
    raise ImportError("the splitlearn wire format needs a little-endian host")


class WireError(ValueError):
    """Bytes that are not a valid message, or a message that cannot be put on the wire."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Limits:
    """What :func:`decode` accepts. Floating tensors of ``finite_kinds`` must hold no NaN or Inf
    (float labels are soft labels: class probabilities)."""

    max_message_bytes: int = 512 << 20  # encoded size (checked by decode only)
    max_tensor_elements: int = 1 << 27  # per tensor, and so per dimension
    max_dims: int = 8
    finite_kinds: frozenset[str] = frozenset({"Activation", "Gradient", "Labels", "Output", "Weights"})


_DTYPES = {
    torch.float16: pb.DTYPE_FLOAT16,
    torch.bfloat16: pb.DTYPE_BFLOAT16,
    torch.float32: pb.DTYPE_FLOAT32,
    torch.float64: pb.DTYPE_FLOAT64,
    torch.int64: pb.DTYPE_INT64,
    torch.int32: pb.DTYPE_INT32,
    torch.uint8: pb.DTYPE_UINT8,
    torch.bool: pb.DTYPE_BOOL,
}
_TORCH_DTYPES = {v: k for k, v in _DTYPES.items()}
# Enum-valued fields, by field name: Python value -> wire number (0 means unset).
_ENUMS = {
    "mode": {"train": pb.MODE_TRAIN, "eval": pb.MODE_EVAL},
    "route": {"peer": pb.ROUTE_PEER, "server": pb.ROUTE_SERVER},
    "tag": {"step": pb.STEP_DONE_TAG_STEP, "relay": pb.STEP_DONE_TAG_RELAY, "abort": pb.STEP_DONE_TAG_ABORT},
}
_ENUM_VALUES = {name: {v: k for k, v in numbers.items()} for name, numbers in _ENUMS.items()}
_ENCODINGS = {"fp16": pb.ENCODING_FLOAT16, "int8": pb.ENCODING_INT8, "topk": pb.ENCODING_TOPK}
_CODECS = {v: k for k, v in _ENCODINGS.items()}
_KINDS = {
    cls.__name__: cls
    for cls in (m.Manifest, m.StartStep, m.Activation, m.Gradient, m.Labels, m.Output, m.StepDone, m.RelayRequest, m.Weights, m.Abort,
                m.ScoreRequest, m.Scores)
}
_BODIES = {f.message_type.name: f.name for f in pb.Envelope.DESCRIPTOR.oneofs_by_name["body"].fields}
_HEADER = ("sender", "receiver", "step")


@functools.cache
def _body_fields(cls: type[m.Message]) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls) if f.name not in _HEADER)


# -- encoding --------------------------------------------------------------------------------------


def _tensor_to_proto(t: torch.Tensor, out: pb.Tensor, where: str) -> None:
    if t.dtype not in _DTYPES:
        raise WireError(f"{where}: dtype {t.dtype} cannot go on the wire (allowed: {', '.join(map(str, _DTYPES))})")
    out.dtype = _DTYPES[t.dtype]
    out.shape.extend(t.shape)
    out.data = _raw_bytes(t)


def _compressed_to_proto(c: Compressed, out: pb.Tensor) -> None:
    out.dtype = _DTYPES[c.dtype]
    out.shape.extend(c.shape)
    out.encoding = _ENCODINGS[c.codec]
    out.data = _raw_bytes(c.values)
    if c.indices is not None:
        out.indices = _raw_bytes(c.indices)
    out.scale, out.zero_point = c.scale, c.zero_point


def _raw_bytes(t: torch.Tensor) -> bytes:
    t = t.detach().cpu().contiguous()
    # Contiguous means dense in C order, but size-0/1 dims may keep any stride: flatten by hand.
    return t.as_strided((t.numel(),), (1,)).view(torch.uint8).numpy().tobytes()


def _meta_to_json(meta: Any, where: str) -> str:
    if not isinstance(meta, dict):
        raise WireError(f"{where}: expected a dict, got {type(meta).__name__}")
    try:
        return json.dumps(meta, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as e:
        raise WireError(f"{where}: not JSON-serialisable: {e}") from None


def message_to_proto(message: m.Message) -> pb.Envelope:
    """The ``Envelope`` carrying ``message``; raises :class:`WireError` if it cannot go on the wire."""
    kind = message.kind
    if _KINDS.get(kind) is not type(message):
        raise WireError(f"cannot encode {type(message).__qualname__}: not a splitlearn message kind")
    env = pb.Envelope(header=pb.Header(sender=message.sender, receiver=message.receiver, step=message.step, kind=kind))
    body = getattr(env, _BODIES[kind])
    body.SetInParent()  # selects the oneof even when every field holds its default
    for name in _body_fields(type(message)):
        value, where = getattr(message, name), f"{kind}.{name}"
        if name in _ENUMS:
            if value not in _ENUMS[name]:
                raise WireError(f"{where}: {value!r} is not one of {', '.join(_ENUMS[name])}")
            setattr(body, name, _ENUMS[name][value])
        elif name == "meta":
            body.meta = _meta_to_json(value, where)
        elif name == "bindings":
            body.bindings.extend(pb.Binding(role=role, party=party) for role, party in value.items())
        elif isinstance(value, torch.Tensor):
            _tensor_to_proto(value, getattr(body, name), where)
        elif isinstance(value, Compressed):
            if kind not in COMPRESSIBLE or name != "tensor":
                raise WireError(f"{where}: only the tensor of an {' or a '.join(COMPRESSIBLE)} may be compressed")
            _compressed_to_proto(value, getattr(body, name))
        elif isinstance(value, dict):
            entries = getattr(body, name).entries
            for key, t in value.items():
                _tensor_to_proto(t, entries.add(key=key).tensor, f"{where}[{key!r}]")
        else:
            setattr(body, name, value)
    return env


def encode(message: m.Message) -> bytes:
    """``message`` as wire bytes."""
    return message_to_proto(message).SerializeToString(deterministic=True)


# -- decoding --------------------------------------------------------------------------------------


def _tensor_from_proto(t: pb.Tensor, where: str, limits: Limits, *, finite: bool) -> torch.Tensor:
    dtype, shape, numel = _header(t, where, limits)
    data = t.data
    if len(data) != numel * dtype.itemsize:
        raise WireError(f"{where}: {len(data)} bytes, but shape {shape} of {dtype} needs {numel * dtype.itemsize}")
    if dtype is torch.bool and data.translate(None, b"\x00\x01"):  # bytes other than 0 and 1 left over
        raise WireError(f"{where}: bool tensor holds bytes other than 0 and 1")
    tensor = _from_bytes(data, dtype, shape)
    if finite:
        _check_finite(tensor, where)
    return tensor


def _header(t: pb.Tensor, where: str, limits: Limits) -> tuple[torch.dtype, list[int], int]:
    """The dtype, shape and element count a ``Tensor`` declares, checked against ``limits``."""
    dtype = _TORCH_DTYPES.get(t.dtype)
    if dtype is None:
        raise WireError(f"{where}: bad dtype {t.dtype} (allowed: {', '.join(map(str, _DTYPES))})")
    shape = list(t.shape)
    if len(shape) > limits.max_dims:
        raise WireError(f"{where}: {len(shape)} dims, more than the limit of {limits.max_dims}")
    if any(not 0 <= d <= limits.max_tensor_elements for d in shape):
        raise WireError(f"{where}: bad shape {shape}: each dim must lie in [0, {limits.max_tensor_elements}]")
    numel = math.prod(shape)
    if numel > limits.max_tensor_elements:
        raise WireError(f"{where}: {numel} elements, more than the limit of {limits.max_tensor_elements}")
    return dtype, shape, numel


def _any_tensor_from_proto(t: pb.Tensor, where: str, limits: Limits, *, finite: bool, compressible: bool) -> torch.Tensor | Compressed:
    """A raw tensor, or (where ``compressible``) a compressed one, validated."""
    if t.encoding == pb.ENCODING_RAW:
        if t.scale or t.zero_point or t.indices:
            raise WireError(f"{where}: a raw tensor carries no scale, zero point or indices")
        return _tensor_from_proto(t, where, limits, finite=finite)
    if not compressible:
        raise WireError(f"{where}: only the tensor of an {' or a '.join(COMPRESSIBLE)} may be compressed")
    return _compressed_from_proto(t, where, limits, finite=finite)


def _compressed_from_proto(t: pb.Tensor, where: str, limits: Limits, *, finite: bool) -> Compressed:
    codec = _CODECS.get(t.encoding)
    if codec is None:
        raise WireError(f"{where}: unknown encoding {t.encoding} (known: raw, {', '.join(_ENCODINGS)})")
    dtype, shape, numel = _header(t, where, limits)
    if not dtype.is_floating_point:
        raise WireError(f"{where}: {codec} encodes floating tensors, not {dtype}")
    if numel * dtype.itemsize > limits.max_message_bytes:  # no bigger than a raw message may be
        raise WireError(f"{where}: decodes to {numel * dtype.itemsize} bytes, more than the limit of {limits.max_message_bytes}")
    indices = None
    if codec == "topk":
        if len(t.indices) % 4:
            raise WireError(f"{where}: topk positions take {len(t.indices)} bytes, not a multiple of 4 (int32)")
        k = len(t.indices) // 4
        if k > numel:
            raise WireError(f"{where}: topk keeps {k} values of a tensor of {numel} elements")
        indices = _from_bytes(t.indices, torch.int32, [k])
        values_dtype, values_shape = dtype, [k]
    elif t.indices:
        raise WireError(f"{where}: {codec} carries no positions")
    else:
        values_dtype, values_shape = (torch.float16 if codec == "fp16" else torch.uint8), shape
    need = math.prod(values_shape) * values_dtype.itemsize
    if len(t.data) != need:
        raise WireError(f"{where}: {codec} data of {len(t.data)} bytes, but {values_shape} values of {values_dtype} need {need}")
    values = _from_bytes(t.data, values_dtype, values_shape)
    if finite:
        _check_finite(values, where)
    try:
        return Compressed(codec, dtype, tuple(shape), values, indices, scale=t.scale, zero_point=t.zero_point)
    except ValueError as e:
        raise WireError(f"{where}: {e}") from None


def _from_bytes(data: bytes, dtype: torch.dtype, shape: list[int]) -> torch.Tensor:
    """A writable tensor owning a copy of ``data`` (whose length the caller has checked)."""
    return torch.frombuffer(bytearray(data), dtype=dtype).reshape(shape) if data else torch.empty(shape, dtype=dtype)


def _check_finite(tensor: torch.Tensor, where: str) -> None:
    """Refuse a floating tensor holding NaN or Inf, saying how many of each (``where`` is kind.field).

    The transports decode on their network threads: numpy does the check there on one core, where
    a torch reduction would start an OpenMP team per calling thread whose spinning slows the
    training thread's own torch work."""
    if not tensor.dtype.is_floating_point or tensor.numel() == 0:
        return
    values = tensor.numpy() if tensor.dtype is not torch.bfloat16 else tensor.float().numpy()
    with np.errstate(over="ignore", invalid="ignore"):
        if np.isfinite(values.sum()):  # any NaN or Inf makes the sum NaN or Inf: one cheap pass
            return
    if np.isfinite(values).all():  # the sum overflowed, the values are fine
        return
    nan = int(np.isnan(values).sum())
    inf = int(np.isinf(values).sum())
    raise WireError(f"{where}: holds NaN or Inf ({nan + inf} of {tensor.numel()} values: {nan} NaN, {inf} Inf)")


def _sample_ids(t: torch.Tensor, where: str) -> torch.Tensor:
    if t.dtype is not torch.int64 or t.dim() != 1:
        raise WireError(f"{where}: sample ids must be a 1-D int64 tensor, got {t.dtype} of shape {list(t.shape)}")
    return t


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    if not math.isfinite(value := float(text)):
        raise ValueError(f"{text} overflows a float")
    return value


def _meta_from_json(text: str, where: str) -> dict[str, Any]:
    try:
        meta = json.loads(text, parse_constant=_reject_constant, parse_float=_finite_float)
    except (ValueError, RecursionError) as e:
        raise WireError(f"{where}: not JSON: {e}") from None
    if not isinstance(meta, dict):
        raise WireError(f"{where}: expected a JSON object, got {type(meta).__name__}")
    return meta


def _unique(pairs: list[tuple[str, Any]], where: str) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        dupes = sorted(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
        raise WireError(f"{where}: duplicate keys {dupes}")
    return out


def message_from_proto(env: pb.Envelope, *, limits: Limits = Limits()) -> m.Message:
    """The message an ``Envelope`` carries, validated; raises :class:`WireError` if it is invalid."""
    if not env.HasField("header"):
        raise WireError("missing header")
    header = env.header
    cls = _KINDS.get(header.kind)
    if cls is None:
        raise WireError(f"unknown message kind {header.kind!r}")
    body_name = env.WhichOneof("body")
    if body_name != _BODIES[header.kind]:
        raise WireError(f"header says {header.kind} but the body is {body_name or 'missing'}")
    for name in ("sender", "receiver"):
        if not getattr(header, name):
            raise WireError(f"{header.kind}: missing header field {name}")
    body, finite = getattr(env, body_name), header.kind in limits.finite_kinds
    values: dict[str, Any] = {}
    for name in _body_fields(cls):
        value, where = getattr(body, name), f"{header.kind}.{name}"
        if name in _ENUMS:
            choices = _ENUM_VALUES[name]
            if value not in choices:
                problem = "missing" if value == 0 else f"unknown value {value}"
                raise WireError(f"{where}: {problem} (expected {' or '.join(choices.values())})")
            values[name] = choices[value]
        elif name == "meta":
            values[name] = _meta_from_json(value, where)
        elif name == "bindings":
            if any(not b.role or not b.party for b in value):
                raise WireError(f"{where}: a binding misses its role or party")
            values[name] = _unique([(b.role, b.party) for b in value], where)
        elif isinstance(value, pb.Tensor):
            if not body.HasField(name):
                raise WireError(f"{where}: missing tensor")
            compressible = header.kind in COMPRESSIBLE and name == "tensor"
            t = _any_tensor_from_proto(value, where, limits, finite=finite, compressible=compressible)
            values[name] = _sample_ids(t, where) if name == "sample_ids" else t
        elif isinstance(value, pb.TensorMap):
            pairs = []
            for e in value.entries:
                at = f"{where}[{e.key!r}]"
                if not e.HasField("tensor"):
                    raise WireError(f"{at}: missing tensor")
                t = _any_tensor_from_proto(e.tensor, at, limits, finite=finite, compressible=False)
                pairs.append((e.key, _sample_ids(t, at) if name == "sample_ids" else t))
            values[name] = _unique(pairs, where)
        elif isinstance(value, bool) or name in ("epoch", "leakage_batch_size"):  # counts, not steps: any uint32
            values[name] = value
        elif isinstance(value, int):
            if not 0 <= value < header.step:
                raise WireError(f"{where}: {value} is not a step before this one ({header.step})")
            values[name] = value
        elif not value:
            raise WireError(f"{where}: missing")
        else:
            values[name] = value
    return cls(header.sender, header.receiver, header.step, **values)


def decode(data: bytes, *, limits: Limits = Limits()) -> m.Message:
    """The message encoded in untrusted ``data``; raises :class:`WireError` if it is invalid."""
    if len(data) > limits.max_message_bytes:
        raise WireError(f"message of {len(data)} bytes exceeds the limit of {limits.max_message_bytes}")
    env = pb.Envelope()
    try:
        env.ParseFromString(data)
    except DecodeError as e:
        raise WireError(f"not a splitlearn Envelope: {e}") from None
    return message_from_proto(env, limits=limits)


# -- size accounting -------------------------------------------------------------------------------


def wire_size(message: m.Message) -> int:
    """``len(encode(message))``."""
    return message_to_proto(message).ByteSize()


@dataclass(frozen=True, slots=True)
class WireOverhead:
    """Raw tensor bytes of a message against the bytes it takes on the wire."""

    payload_bytes: int
    wire_bytes: int

    @property
    def ratio(self) -> float:
        """Wire bytes per payload byte (``inf`` for a message without tensor data)."""
        return self.wire_bytes / self.payload_bytes if self.payload_bytes else math.inf


def wire_overhead(message: m.Message) -> WireOverhead:
    """How much the protocol adds to the raw tensor bytes of ``message``."""
    return WireOverhead(message.payload_bytes, wire_size(message))
