"""A party: one site that owns some segments, their optimiser and its local data.

A party reacts to messages only. It never sees another party's modules, data or labels; what it
learns arrives as :mod:`splitlearn.split.messages`. Gradients cross the cut as explicit messages,
each segment's input is a fresh leaf tensor, and the party steps its own optimiser once all of its
segments have finished the backward pass of the step.

Nothing non-finite is committed: a party refuses floating inputs holding NaN or Inf (smashed data,
gradients, soft labels, outputs, relayed weights) and checks what it computes from them (each
segment's output, its loss, the gradients it sends, the gradients it is about to apply, and its
parameters, optimiser state and buffers after the step) before the step is committed. A step that
fails a check is rolled back (parameters, optimiser state and buffers as before it) and raises
:class:`~splitlearn.split.messages.NonFinite` naming the party whose input caused it.
"""

from splitlearn.split.party.core import Party
from splitlearn.split.party.data import CheckpointStore, EvalTotals, Penalty, Shard

__all__ = ["CheckpointStore", "EvalTotals", "Party", "Penalty", "Shard"]
