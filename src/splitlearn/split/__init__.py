"""The protocol core: plans, parties, messages, the coordinator and the transport port.

Nothing here imports a concrete transport; :mod:`splitlearn.transport` implements the port.
"""

from splitlearn.split.configs import CONFIGURATIONS, MultiHead, Split, Vertical
from splitlearn.split.coordinator import Coordinator
from splitlearn.split.messages import ProtocolError
from splitlearn.split.party import Party, Shard
from splitlearn.split.plan import Head, Node, Plan
from splitlearn.split.segments import CutError, split_model
from splitlearn.split.state import OptimizerSpec
from splitlearn.split.transport import MessageLog, Transport

__all__ = [
    "CONFIGURATIONS",
    "Coordinator",
    "CutError",
    "Head",
    "MessageLog",
    "MultiHead",
    "Node",
    "OptimizerSpec",
    "Party",
    "Plan",
    "ProtocolError",
    "Shard",
    "Split",
    "Transport",
    "Vertical",
    "split_model",
]
