"""Efficiency accounting: FLOPs per party and phase, bytes on the wire, memory per party.

Pass a :class:`FlopMeter` as the ``compute=`` hook of a simulation, train, then :func:`account`.
"""

from splitlearn.accounting.memory import party_memory, tensor_bytes
from splitlearn.accounting.meter import PHASES, FlopMeter
from splitlearn.accounting.report import account
from splitlearn.accounting.wire import wire_bytes

__all__ = ["PHASES", "FlopMeter", "account", "party_memory", "tensor_bytes", "wire_bytes"]
