"""Baselines to compare split learning with: federated averaging and large-batch synchronous SGD,
accounted (FLOPs, bytes of real messages, memory) as split learning is."""

from splitlearn.baselines._common import BaselineRun
from splitlearn.baselines.compare import METHODS, compare, compression_costs, cut_bytes, summary
from splitlearn.baselines.fedavg import fedavg
from splitlearn.baselines.large_batch import ModelGradients, large_batch_sgd

__all__ = [
    "METHODS", "BaselineRun", "ModelGradients", "compare", "compression_costs", "cut_bytes", "fedavg", "large_batch_sgd", "summary",
]
