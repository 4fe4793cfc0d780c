"""Bytes on the wire, per party, direction and message kind, from a message log.

The figure per message is its ``payload_bytes``: exactly the tensor bytes its serialised
``Envelope`` carries, as sent (a compressed activation or gradient counts its encoded values and
positions). The envelope adds framing: the header, names, shapes, tags and lengths, and a
quantisation scale, tens of bytes per cut-layer message whatever the tensor size, which
:func:`splitlearn.transport.serde.wire_overhead` reports per message. The in-process transport
never serialises, so the log records the payload, the same figure for every transport and for the
baselines; a test checks, message by message in real runs, that serialised size = payload +
framing from the protobuf encoding rules.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from operator import attrgetter
from typing import Any

__all__ = ["wire_bytes"]

DIRECTIONS = ("sent", "received")


def wire_bytes(
    messages: Iterable[Any],
    *,
    groups: Mapping[str, Sequence[str]] | None = None,
    size: Callable[[Any], int] = attrgetter("payload_bytes"),
) -> dict:
    """Summarise a log: the total, bytes by kind, and per party the bytes ``sent`` and
    ``received``, each also ``..._by_kind``.

    ``messages`` are :class:`~splitlearn.split.transport.MessageRecord` s or the messages
    themselves (both have ``kind``, ``sender`` and ``receiver``). ``size`` gives one item's bytes:
    the tensor payload by default; pass e.g. a serialiser's encoded length to count what a wire
    format adds. ``groups`` (name -> parties, e.g. round-robin clients) adds ``mean_per_party``:
    each group's figures averaged over its members, counting members that sent nothing.
    """
    parties: dict[str, dict[str, Any]] = {}
    by_kind: Counter[str] = Counter()
    for m in messages:
        n = size(m)
        by_kind[m.kind] += n
        for party, direction in zip((m.sender, m.receiver), DIRECTIONS):
            entry = parties.setdefault(party, _empty())
            entry[direction] += n
            entry[f"{direction}_by_kind"][m.kind] += n
    return {
        "total": sum(by_kind.values()),
        "by_kind": dict(by_kind),
        "parties": {p: _plain(e) for p, e in parties.items()},
        "mean_per_party": {
            group: _mean([parties.get(p, _empty()) for p in members]) for group, members in (groups or {}).items()
        },
    }


def _empty() -> dict[str, Any]:
    return {d: 0 for d in DIRECTIONS} | {f"{d}_by_kind": Counter() for d in DIRECTIONS}


def _plain(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: dict(v) if isinstance(v, Counter) else v for k, v in entry.items()}


def _mean(entries: list[dict[str, Any]]) -> dict[str, Any]:
    k = len(entries)
    out: dict[str, Any] = {d: sum(e[d] for e in entries) / k for d in DIRECTIONS}
    for d in DIRECTIONS:
        kinds: Counter[str] = Counter()
        for e in entries:
            kinds.update(e[f"{d}_by_kind"])  # keeps zero-byte kinds, unlike Counter addition
        out[f"{d}_by_kind"] = {kind: n / k for kind, n in kinds.items()}
    return out
