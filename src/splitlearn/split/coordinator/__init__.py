"""The coordinator: decides which batch runs next and whose turn it is; sees no data or tensors.

It learns each data party's sample ids (``Manifest``), draws the batch order from a seed, starts
each step by telling the data parties which ids to run, waits for every party's ``StepDone``, and
in round-robin training asks the client holding the shared segments to relay them to the next.

Training steps are pipelined one deep: the ``StartStep`` of the next batch goes out with the
current one's, and each party begins it as soon as it has finished the current step itself. A
party's work and its order are the same as without pipelining (the results are identical), but
the round trip from a party's ``StepDone`` to the next ``StartStep`` leaves the critical path: over
a network, one message delay less per step.
"""

from splitlearn.split.coordinator.core import Coordinator
from splitlearn.split.coordinator.schedule import Batch, pipelinable, shuffled_batches

__all__ = ["Batch", "Coordinator", "pipelinable", "shuffled_batches"]
