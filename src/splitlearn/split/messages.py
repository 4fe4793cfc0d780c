"""Messages exchanged between parties.

Every message is a plain frozen dataclass: a header (sender, receiver, step) plus tensors and small
JSON-compatible metadata. ``payload_bytes`` is the size of the tensors it carries, the figure the
transports log for every message. A transport may serialise these however it likes; the training
logic only ever sees these types.

The ``tensor`` of an :class:`Activation` or a :class:`Gradient` may travel in another form, an
:class:`Encoded` value (a codec's output, e.g. :class:`~splitlearn.split.compression.Compressed`);
``payload_bytes`` then counts its encoded bytes, and the receiving party decodes it before use.
This module knows no codec: codecs build on it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field, fields
from typing import Any, Literal

import torch

__all__ = [
    "Abort",
    "Activation",
    "Gradient",
    "Labels",
    "Manifest",
    "Message",
    "NonFinite",
    "Output",
    "ProtocolError",
    "RelayRequest",
    "ScoreRequest",
    "Scores",
    "StartStep",
    "StepDone",
    "Weights",
    "payload_fields",
]

Mode = Literal["train", "eval"]


@functools.cache
def payload_fields(cls: type) -> tuple[str, ...]:
    """The fields of message class ``cls`` after its header (sender, receiver, step)."""
    return tuple(f.name for f in fields(cls) if f.name not in ("sender", "receiver", "step"))


class ProtocolError(RuntimeError):
    """A message broke the protocol: wrong step, unknown node, impersonation, misaligned batch.

    ``party``, where set, is the party whose message is at fault when that is not the one being
    handled (a transport that cuts off offenders cuts off that one); None: the sender of the message
    being handled."""

    def __init__(self, *args: object, party: str | None = None) -> None:
        super().__init__(*args)
        self.party = party


class NonFinite(ProtocolError):
    """A step would have made a party's state (or what it sends) hold NaN or Inf; the party refused
    it and rolled the step back. ``party`` is the party whose input caused it (the party itself
    when its own data or state did)."""

    def __init__(self, message: str, *, party: str) -> None:
        super().__init__(message, party=party)


class Encoded:
    """A tensor in transit in another form: a codec's output. Subclasses carry ``parts()``, the
    tensors that travel (what ``payload_bytes`` counts), and ``decode()``, the tensor back."""

    __slots__ = ()

    def parts(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def decode(self) -> torch.Tensor:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class Message:
    sender: str
    receiver: str
    step: int

    @property
    def kind(self) -> str:
        return type(self).__name__

    def tensors(self) -> dict[str, torch.Tensor]:
        """The tensors this message carries, by field name (dict fields flattened as ``field/key``,
        compressed fields as ``field.values`` and ``field.indices``)."""
        out: dict[str, torch.Tensor] = {}
        for name in payload_fields(type(self)):
            value = getattr(self, name)
            if isinstance(value, torch.Tensor):
                out[name] = value
            elif isinstance(value, Encoded):
                out.update({f"{name}.{k}": v for k, v in value.parts().items()})
            elif isinstance(value, dict):
                out.update({f"{name}/{k}": v for k, v in value.items() if isinstance(v, torch.Tensor)})
        return out

    @property
    def payload_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.tensors().values())


@dataclass(frozen=True, slots=True)
class Manifest(Message):
    """A data party tells the coordinator which sample ids it holds, per split."""

    sample_ids: dict[str, torch.Tensor]


@dataclass(frozen=True, slots=True)
class StartStep(Message):
    """Coordinator to every party of a step: which party plays each role (``bindings``) and the
    batch (``sample_ids`` of ``split``); data parties and label owners start on it. With
    ``checkpoint``, parties that keep checkpoints save their state once the step is done.
    ``epoch``: the training epoch the step belongs to (0 outside training), for progress reports."""

    mode: Mode
    split: str
    sample_ids: torch.Tensor
    bindings: dict[str, str] = field(default_factory=dict)
    checkpoint: bool = True
    epoch: int = 0


@dataclass(frozen=True, slots=True)
class Activation(Message):
    """Smashed data: the output of node ``src`` for the batch, addressed to node ``dst``."""

    mode: Mode
    src: str
    dst: str
    tensor: torch.Tensor | Encoded
    sample_ids: torch.Tensor


@dataclass(frozen=True, slots=True)
class Gradient(Message):
    """Gradient of the loss with respect to the output of node ``dst``, computed by node ``src``."""

    src: str
    dst: str
    tensor: torch.Tensor | Encoded


@dataclass(frozen=True, slots=True)
class Labels(Message):
    """Labels of ``task`` for the batch, sent by their owner to the party computing that loss."""

    task: str
    labels: torch.Tensor
    sample_ids: torch.Tensor


@dataclass(frozen=True, slots=True)
class Output(Message):
    """Evaluation only: head outputs returned to the label owner, who scores them locally."""

    task: str
    tensor: torch.Tensor
    sample_ids: torch.Tensor


@dataclass(frozen=True, slots=True)
class StepDone(Message):
    """A party finished its part of a step (``tag='relay'``: installed relayed weights;
    ``tag='abort'``: rolled back as an :class:`Abort` asked)."""

    tag: Literal["step", "relay", "abort"] = "step"


@dataclass(frozen=True, slots=True)
class Abort(Message):
    """Coordinator to a party, after a party was lost mid-step: forget the step in progress, go
    back to the newest checkpoint taken at or before step ``restore_to`` (the last step every
    party finished), and ignore every message of a step before this one's ``step``."""

    restore_to: int


@dataclass(frozen=True, slots=True)
class RelayRequest(Message):
    """Coordinator to the client holding the shared segments: hand them to ``destination``."""

    destination: str
    route: Literal["peer", "server"]


@dataclass(frozen=True, slots=True)
class Weights(Message):
    """Round-robin relay: segment weights and optimiser state, in transit to ``destination``."""

    destination: str
    state: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ScoreRequest(Message):
    """Coordinator to a label owner that runs elsewhere, after an evaluation pass over ``split``:
    report the pass's totals in :class:`Scores`, and start the next pass from zero. With
    ``leakage_batch_size`` > 0, a data party also reports the held-out DCOR(X, Z) of its data
    segments over ``split`` at that batch size (see :attr:`Scores.meta`)."""

    split: str
    leakage_batch_size: int = 0


@dataclass(frozen=True, slots=True)
class Scores(Message):
    """A label owner's totals over one evaluation pass of ``split``, per task, in ``meta``:
    ``{task: {"count": n, "correct": k, "loss_sum": s}}``; nothing per sample or per batch. Empty
    when the owner keeps its scores to itself. Asked for leakage, a data party adds
    ``"leakage": {"dcor": {node: value}, "collapsed": bool}``."""

    split: str
    meta: dict[str, Any] = field(default_factory=dict)
