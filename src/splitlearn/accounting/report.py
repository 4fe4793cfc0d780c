"""One JSON-able efficiency report for a run: FLOPs, bytes on the wire and memory."""

from __future__ import annotations

from typing import TYPE_CHECKING

from splitlearn.accounting.memory import party_memory
from splitlearn.accounting.wire import wire_bytes

if TYPE_CHECKING:
    from splitlearn.accounting.meter import FlopMeter
    from splitlearn.split.simulation import Simulation

__all__ = ["account"]


def account(sim: Simulation, meter: FlopMeter) -> dict:
    """Report on ``sim``, whose parties ran with ``compute=meter``.

    ``parties``: role -> the parties playing it. ``flops``: :meth:`FlopMeter.summary`.
    ``bytes``: :func:`wire_bytes` of the run's message log, with each role as a group.
    ``memory``: role -> :func:`party_memory` of the party now holding the role's segments, with the
    role's activations (the sum of its nodes' largest saved bytes: a party keeps every node's
    saved tensors until its backward). Every round-robin client holds the same on its turn.
    """
    roles: dict[str, list[str]] = {}
    for name, party in sim.parties.items():
        roles.setdefault(party.role, []).append(name)
    holders = {p.role: p for p in sim.parties.values() if p.holds_weights}
    return {
        "parties": roles,
        "flops": meter.summary(sim.plan, parties={r: len(names) for r, names in roles.items()}),
        "bytes": wire_bytes(sim.log.records, groups=roles),
        "memory": {
            role: party_memory(p, activations=sum(meter.saved.get(n, 0) for n in p.nodes))
            for role, p in holders.items()
        },
    }
