"""What a party checks of each message before it acts on it, and of what it computes: shapes,
sample ids, labels and finiteness (one cheap pass per tensor, never twice for the same tensor)."""

from __future__ import annotations

import math
import weakref
from typing import NoReturn

import torch

from splitlearn.split.compression import Compressed
from splitlearn.split.messages import (
    Activation,
    Gradient,
    Labels,
    Message,
    NonFinite,
    ProtocolError,
)

__all__ = ["MessageChecks", "all_finite", "gradient_bound", "magnitude", "mark_finite", "state_finite"]


_verified: dict[int, tuple[weakref.ref, int]] = {}  # id -> (the tensor, its version when found finite)


def known_finite(t: torch.Tensor) -> bool:
    """Whether this process has already found ``t`` finite and it has not changed since."""
    seen = _verified.get(id(t))
    return seen is not None and seen[0]() is t and seen[1] == t._version


def mark_finite(t: torch.Tensor) -> None:
    """Remember that ``t`` (as it is now) is finite, so that a party of the same process receiving
    this very tensor does not scan it again. Only the latest few are kept."""
    if len(_verified) >= 64:
        del _verified[next(iter(_verified))]
    _verified[id(t)] = (weakref.ref(t), t._version)


_FEW = 4  # up to this many tensors, one sum each; beyond it, one multi-tensor norm for all (state_finite)


def all_finite(tensors) -> bool:
    """Whether every floating tensor of ``tensors`` holds no NaN or Inf, with one sync for all.

    A reduction is finite when every element is (NaN and Inf propagate). For a few tensors (smashed
    data, a gradient, a loss) a sum is the cheapest full pass there is (``isfinite(t).all()`` costs
    ten times more on the CPU); many go to :func:`state_finite`. Only when the one number is not
    finite, which finite values can also cause by overflowing, are the tensors looked at again
    element by element. A tensor sent within one process, unchanged since its sender checked it
    (:func:`mark_finite`), is not scanned twice; a copy or a tensor a hook replaced always is."""
    ts = [t.detach() for t in tensors if t.is_floating_point() and t.numel() and not known_finite(t)]
    if len(ts) > _FEW:
        return state_finite(ts)
    if not ts:
        return True
    # a sum of the sums: finite when each is, unless it overflows (then each is looked at)
    sums = [t.sum(dtype=torch.float64 if t.dtype == torch.float64 else torch.float32) for t in ts]
    total = torch.stack([x.to(sums[0].device) for x in sums]).sum()
    return math.isfinite(float(total)) or all(bool(torch.isfinite(t).all()) for t in ts)


def state_finite(tensors: list[torch.Tensor]) -> bool:
    """Whether every one of many floating tensors (a party's parameters or batch-norm statistics)
    holds no NaN or Inf. Their cost is in dispatching a reduction per tensor, so they share one
    multi-tensor L2 norm (:func:`torch.nn.utils.get_total_norm`, which takes no gradient), looked
    at element by element only when that norm is not finite."""
    if not tensors:
        return True
    total = float(torch.nn.utils.get_total_norm(tensors))  # one multi-tensor pass; NaN if any element is
    return math.isfinite(total) or all(bool(torch.isfinite(t).all()) for t in tensors)


def gradient_bound(dtype: torch.dtype) -> float:
    """The largest gradient magnitude a step may apply: squared (as Adam does) it stays finite,
    with room to spare. Half precision has no such room; there only finiteness is required."""
    if dtype not in (torch.float32, torch.float64):
        return math.inf
    return math.sqrt(torch.finfo(dtype).max) / 16


def magnitude(t: torch.Tensor) -> float:
    """The largest magnitude in ``t``, NaN counting as infinite (0 for an empty tensor)."""
    if not t.numel():
        return 0.0
    return float(torch.nan_to_num(t.detach().abs().float(), nan=math.inf).max())


class MessageChecks:
    """The checks of :class:`~splitlearn.split.party.Party` on what it receives (a mixin)."""

    def _check_activation(self, msg: Activation) -> None:
        """Refuse smashed data whose rows, dtype or per-sample shape differ from what this edge
        carries (the first activation on it sets the shape; the segment's parameters the dtype)."""
        t, where = msg.tensor, f"{self.name}: activation {msg.src} -> {msg.dst} from {msg.sender}"
        if t.dim() == 0 or t.shape[0] != len(msg.sample_ids):
            raise ProtocolError(f"{where} has shape {tuple(t.shape)} for {len(msg.sample_ids)} sample ids")
        module = self.modules[msg.dst] if self.modules else None
        param = next(module.parameters(), None) if module is not None else None
        dtype = param.dtype if param is not None else torch.get_default_dtype()
        key = (msg.src, msg.dst)
        expected = self._edges.setdefault(key, (self._shapes.get(key, tuple(t.shape[1:])), dtype))
        if (tuple(t.shape[1:]), t.dtype) != expected:
            raise ProtocolError(f"{where} is {t.dtype} with per-sample shape {tuple(t.shape[1:])}; "
                                f"this edge carries {expected[1]} {expected[0]}")
        self._check_finite(msg, t, f"activation {msg.src} -> {msg.dst}")

    def _check_declared(self, msg: Message) -> None:
        """Refuse a compressed tensor whose declared shape is not the one its edge carries before
        decoding it allocates that shape: smashed data of the edge's per-sample shape (as the
        split's probe found it, else as the edge's first activation set it) for each sample id; a
        gradient of the shape of the output it is for."""
        t = getattr(msg, "tensor", None)
        if not isinstance(t, Compressed) or not isinstance(msg, Activation | Gradient):
            return
        if isinstance(msg, Activation):
            key = (msg.src, msg.dst)
            per_sample = self._edges[key][0] if key in self._edges else self._shapes.get(key)
            agreed = None if per_sample is None else (len(msg.sample_ids), *per_sample)
            fits = tuple(t.shape[:1]) == (len(msg.sample_ids),) and (agreed is None or tuple(t.shape) == agreed)
            carries = list(agreed) if agreed is not None else f"{len(msg.sample_ids)} rows"
        else:
            out = self._st.outputs.get(msg.dst) if self._st is not None and self._st.step == msg.step else None
            agreed = tuple(out.shape) if isinstance(out, torch.Tensor) else None
            fits = agreed is not None and tuple(t.shape) == agreed
            carries = list(agreed) if agreed is not None else "no output of that step here"
        if not fits:
            raise ProtocolError(f"{self.name}: {t.codec} {msg.kind} {msg.src} -> {msg.dst} of step {msg.step} from {msg.sender} "
                                f"declares shape {list(t.shape)[:8]}; this edge carries {carries}", party=msg.sender)

    def _check_finite(self, msg: Message, t: torch.Tensor, what: str) -> None:
        if not all_finite([t]):
            self._reject(msg, f"{what} of step {msg.step} from {msg.sender} holds NaN or Inf")

    def _reject(self, msg: Message, problem: str) -> NoReturn:
        """Refuse ``msg`` as its sender's fault: the step in progress is rolled back."""
        if self._st is not None:
            self._roll_back(self._st)
        raise NonFinite(f"{self.name}: {problem}", party=msg.sender)

    def _check_labels(self, msg: Labels) -> None:
        """Soft (float) labels are class probabilities: finite and in [0, 1]."""
        y = msg.labels
        if not y.is_floating_point():
            return
        self._check_finite(msg, y, f"labels for task {msg.task!r}")
        if y.numel() and not (bool((y >= 0).all()) and bool((y <= 1).all())):
            raise ProtocolError(f"{self.name}: soft labels for task {msg.task!r} of step {msg.step} from {msg.sender} "
                                "are not probabilities (values outside [0, 1])", party=msg.sender)

