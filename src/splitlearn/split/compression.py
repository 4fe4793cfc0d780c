"""Compression of smashed data at the cut: activations forward, gradients backward.

A codec turns a floating tensor into a :class:`Compressed` value, which travels in place of the
tensor in an :class:`~splitlearn.split.messages.Activation` or
:class:`~splitlearn.split.messages.Gradient` and is what ``payload_bytes`` counts. The receiving
party decodes it to a tensor of the original dtype and shape before the protocol uses it, so the
protocol's checks (shapes, dtypes, sample ids) hold unchanged; only the values carry the codec's
error:

- ``fp16``: the values cast to float16 (2 bytes each). Exact for values float16 represents;
  otherwise the nearest float16. Refuses values beyond float16's range (65504).
- ``int8``: affine 8-bit quantisation with one scale and integer zero point per tensor:
  ``value = scale * (q - zero_point)`` with ``q`` in [0, 255] (1 byte each). The range always
  includes 0, so zeros (e.g. after a ReLU) stay exact; the error of every value is at most
  ``scale / 2`` (up to float32 rounding).
- ``topk``: in each sample (a slice along the first, batch dimension), the ``ceil(ratio * n)`` of
  its ``n`` values of largest magnitude, in the original dtype, with their flat positions in the
  tensor as int32 (ascending); every other value decodes to 0. Per sample, so that every sample
  keeps its strongest features, whatever the magnitudes of the others.

:class:`Compressor` is a party ``outbox`` hook that compresses the cut tensors it sends;
:func:`decompress` is what a receiving party applies to every message it handles.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal

import torch

from splitlearn.split.messages import Encoded, Message, payload_fields

__all__ = ["CODECS", "Compressed", "Compressor", "as_tensor", "compress", "decompress"]

CODECS = ("fp16", "int8", "topk")
Codec = Literal["fp16", "int8", "topk"]
COMPRESSIBLE = ("Activation", "Gradient")
"""The message kinds whose ``tensor`` may travel compressed: what crosses the cut."""

FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_LEVELS = 255  # int8: q in [0, 255], stored as uint8
_INDEX = torch.int32  # topk positions; tensors on the wire have at most 2**27 elements


@dataclass(frozen=True, slots=True, eq=False)
class Compressed(Encoded):
    """A tensor of ``dtype`` and ``shape`` in compressed form.

    ``values``: float16 of ``shape`` (fp16), uint8 of ``shape`` (int8), or the k kept values, 1-D
    of ``dtype`` (topk). ``indices``: topk only, the k flat C-order positions, int32, strictly
    increasing. ``scale`` and ``zero_point``: int8 only. Raises ``ValueError`` when the parts are
    inconsistent; :func:`~splitlearn.transport.serde.decode` relies on these checks for values from
    the wire.
    """

    codec: Codec
    dtype: torch.dtype
    shape: tuple[int, ...]
    values: torch.Tensor
    indices: torch.Tensor | None = None
    scale: float = 0.0
    zero_point: int = 0

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"unknown codec {self.codec!r}; known: {', '.join(CODECS)}")
        if self.dtype not in FLOATS:
            raise ValueError(f"{self.codec} compresses floating tensors, not {self.dtype}")
        numel = math.prod(self.shape)
        values, indices = self.values, self.indices
        if self.codec == "topk":
            if indices is None or indices.dtype != _INDEX or indices.dim() != 1:
                raise ValueError("topk needs its positions as a 1-D int32 tensor")
            if values.dtype != self.dtype or values.shape != indices.shape:
                raise ValueError(
                    f"topk has {indices.numel()} positions but {values.numel()} values of {values.dtype}; "
                    f"expected one value of {self.dtype} per position"
                )
            if indices.numel() > numel:
                raise ValueError(f"topk keeps {indices.numel()} values of a tensor of {numel} elements")
            if indices.numel() and not (0 <= int(indices[0]) and int(indices[-1]) < numel):
                raise ValueError(f"topk positions must lie in [0, {numel}), got {int(indices[0])}..{int(indices[-1])}")
            if indices.numel() > 1 and not bool((indices[1:] > indices[:-1]).all()):
                raise ValueError("topk positions must be strictly increasing (sorted, no repeats)")
        else:
            expected = torch.float16 if self.codec == "fp16" else torch.uint8
            if indices is not None:
                raise ValueError(f"{self.codec} carries no positions")
            if values.dtype != expected or tuple(values.shape) != tuple(self.shape):
                raise ValueError(
                    f"{self.codec} values must be {expected} of shape {list(self.shape)}, "
                    f"got {values.dtype} of shape {list(values.shape)}"
                )
        if self.codec == "int8":
            if not (math.isfinite(self.scale) and self.scale > 0):
                raise ValueError(f"int8 scale must be finite and > 0, got {self.scale}")
            if not 0 <= self.zero_point <= _LEVELS:
                raise ValueError(f"int8 zero point must lie in [0, {_LEVELS}], got {self.zero_point}")
            _check_int8_range(self.scale, self.zero_point, self.dtype)
        elif self.scale or self.zero_point:
            raise ValueError(f"{self.codec} carries no scale or zero point")

    @property
    def nbytes(self) -> int:
        """Bytes of the values and positions: what goes on the wire besides a few header fields."""
        return sum(t.numel() * t.element_size() for t in self.parts().values())

    def parts(self) -> dict[str, torch.Tensor]:
        """The tensors this value carries: ``values``, and ``indices`` for topk."""
        return {"values": self.values} | ({"indices": self.indices} if self.indices is not None else {})

    def decode(self) -> torch.Tensor:
        """The tensor of ``dtype`` and ``shape`` that this value stands for; ``ValueError`` if
        any of its values would be NaN or Inf (the values carried are, or int8's scale and zero
        point reach beyond the dtype's finite range)."""
        if self.codec == "fp16":
            out = self.values.to(self.dtype)
        elif self.codec == "int8":
            out = ((self.values.to(_work(self.dtype)) - self.zero_point) * self.scale).to(self.dtype)
        else:
            dense = torch.zeros(math.prod(self.shape), dtype=self.dtype, device=self.values.device)
            dense[self.indices.long()] = self.values
            out = dense.reshape(self.shape)
        if out.numel() and not bool(torch.isfinite(out).all()):
            bad = int((~torch.isfinite(out)).sum())
            raise ValueError(f"{self.codec} data decodes to NaN or Inf ({bad} of {out.numel()} values of {self.dtype})")
        return out


def _work(dtype: torch.dtype) -> torch.dtype:
    """The dtype int8 decodes in: float64 for float64, else float32."""
    return torch.float64 if dtype is torch.float64 else torch.float32


def _int8_fits(scale: float, zero_point: int, dtype: torch.dtype) -> bool:
    """Whether ``scale * (q - zero_point)`` is finite in ``dtype`` for every q in [0, 255]."""
    work = _work(dtype)
    ends = (torch.tensor([0, _LEVELS], dtype=work) - zero_point) * torch.tensor(scale, dtype=work)
    return bool(torch.isfinite(ends.to(dtype)).all())


def _check_int8_range(scale: float, zero_point: int, dtype: torch.dtype) -> None:
    """Refuse a scale and zero point whose decoded range, ``scale * (q - zero_point)`` for ``q`` in
    [0, 255], computed as :meth:`Compressed.decode` computes it, leaves the finite range of
    ``dtype`` (e.g. scale 1e300 in float32) or collapses to 0 (a scale below its resolution). The
    extremes q = 0 and q = 255 bound every other value, so checking them bounds the decode before
    anything of the payload's size is computed."""
    work = _work(dtype)
    if not _int8_fits(scale, zero_point, dtype):
        info = torch.finfo(dtype)
        raise ValueError(f"int8 scale {scale:.4g} with zero point {zero_point} decodes beyond the finite range of "
                         f"{dtype} (largest: {info.max:.4g})")
    if not float(torch.tensor(scale, dtype=work)) > 0:
        raise ValueError(f"int8 scale {scale:.4g} is below the resolution of {work}: every value would decode to 0")


def compress(tensor: torch.Tensor, codec: Codec, *, ratio: float = 0.1) -> Compressed:
    """``tensor`` (floating, finite) in compressed form; ``ratio``: the share of each sample's
    values topk keeps."""
    if codec not in CODECS:
        raise ValueError(f"unknown codec {codec!r}; known: {', '.join(CODECS)}")
    if tensor.dtype not in FLOATS:
        raise ValueError(f"{codec} compresses floating tensors, not {tensor.dtype}")
    if not 0 < ratio <= 1:
        raise ValueError(f"topk ratio must lie in (0, 1], got {ratio}")
    t = tensor.detach()
    if t.numel() and not bool(torch.isfinite(t).all()):
        raise ValueError(f"{codec}: the tensor holds NaN or Inf (has training diverged?)")
    shape = tuple(t.shape)
    if codec == "fp16":
        values = t.to(torch.float16)
        if not bool(torch.isfinite(values).all()):
            biggest = float(t.abs().max())
            raise ValueError(f"fp16: a value of magnitude {biggest:.4g} overflows float16 (largest: 65504)")
        return Compressed("fp16", t.dtype, shape, values.contiguous())
    if codec == "int8":
        return _quantise(t)
    return _sparsify(t, ratio)


def _sparsify(t: torch.Tensor, ratio: float) -> Compressed:
    n = t.shape[0] if t.dim() else 1  # samples
    m = math.prod(t.shape[1:])  # values per sample
    k = math.ceil(ratio * m)
    if not n * k:
        empty = torch.empty(0, dtype=_INDEX, device=t.device)
        return Compressed("topk", t.dtype, tuple(t.shape), t.new_empty(0), empty)
    rows = t.reshape(n, m)
    cols = torch.topk(rows.abs(), k, dim=1, sorted=False).indices.sort(dim=1).values
    kept = cols + torch.arange(0, n * m, m, device=t.device).unsqueeze(1)  # flat positions, ascending
    return Compressed("topk", t.dtype, tuple(t.shape), rows.gather(1, cols).reshape(-1), kept.reshape(-1).to(_INDEX))


def _quantise(t: torch.Tensor) -> Compressed:
    work = t.to(torch.float64 if t.dtype is torch.float64 else torch.float32)
    lo = min(float(work.min()), 0.0) if work.numel() else 0.0
    hi = max(float(work.max()), 0.0) if work.numel() else 0.0
    scale = float(torch.tensor((hi - lo) / _LEVELS, dtype=work.dtype))  # as decode will multiply by it
    if not scale > 0:  # all zeros (or a range below the dtype's resolution): any scale will do
        scale = 1.0
    zero_point = min(max(round(-lo / scale), 0), _LEVELS)
    for _ in range(4):  # a range up to the dtype's largest value may round up past it: a few ulps less
        if not math.isfinite(scale) or _int8_fits(scale, zero_point, t.dtype):
            break  # (an infinite range is refused by Compressed)
        scale = float(torch.nextafter(torch.tensor(scale, dtype=work.dtype), torch.tensor(0, dtype=work.dtype)))
    q = torch.round(work / scale).add_(zero_point).clamp_(0, _LEVELS).to(torch.uint8)
    return Compressed("int8", t.dtype, tuple(t.shape), q, scale=scale, zero_point=zero_point)


def as_tensor(value: torch.Tensor | Compressed) -> torch.Tensor:
    """``value`` decoded if it is compressed, else ``value`` itself."""
    return value.decode() if isinstance(value, Compressed) else value


def decompress(message: Message) -> Message:
    """``message`` with every compressed field decoded (``message`` itself if it has none)."""
    changes = {name: v.decode() for name in payload_fields(type(message)) if isinstance(v := getattr(message, name), Compressed)}
    return replace(message, **changes) if changes else message


@dataclass(frozen=True)
class Compressor:
    """A party ``outbox`` hook: sends the ``tensor`` of every Activation and Gradient compressed
    with ``codec`` (``ratio``: the share of each sample's values topk keeps). Other messages and
    non-floating tensors pass unchanged."""

    codec: Codec
    ratio: float = 0.1

    def __post_init__(self) -> None:
        if self.codec not in CODECS:
            raise ValueError(f"unknown codec {self.codec!r}; known: {', '.join(CODECS)}")
        if not 0 < self.ratio <= 1:
            raise ValueError(f"topk ratio must lie in (0, 1], got {self.ratio}")

    def __call__(self, message: Message) -> Message:
        tensor = getattr(message, "tensor", None)
        if message.kind not in COMPRESSIBLE or not isinstance(tensor, torch.Tensor) or tensor.dtype not in FLOATS:
            return message
        return replace(message, tensor=compress(tensor, self.codec, ratio=self.ratio))
