"""Efficiency evidence: the split learning talk's tables recomputed, and the SL/FL communication model."""

from splitlearn.efficiency import comm_model
from splitlearn.efficiency.tables import (
    TALK_RATIO,
    Profile,
    Row,
    TalkTable,
    alexnet_rows,
    bandwidth_table,
    compute_table,
    profile,
    training_flops,
)

__all__ = [
    "TALK_RATIO",
    "Profile",
    "Row",
    "TalkTable",
    "alexnet_rows",
    "bandwidth_table",
    "comm_model",
    "compute_table",
    "profile",
    "training_flops",
]
