"""NoPeek (Vepakomma et al., 2019): the client also minimises ``dCor(X, Z)`` of its raw data
``X`` and the smashed data ``Z`` it sends, so that ``Z`` says less about ``X``.

The paper's loss is ``a1 * DCOR(X, Z) + a2 * CCE``. Here the cross-entropy is the server's
plain, unweighted loss, and the client adds :class:`NoPeek` as a local penalty of its data node
(``Simulation(..., penalties={"client": nopeek})``) with weight ``a1 / a2``. The loss trained is
thus the paper's divided by ``a2``: with SGD (momentum included), learning rate ``lr * a2`` and
weight decay ``wd / a2`` here reproduce the paper's ``lr`` and ``wd``; Adam is invariant to the
factor up to its ``eps``.

Too large an ``a1`` makes the client give up: it maps every input to one constant ``Z`` (dCor 0,
chance accuracy). Ramping ``a1`` up over the first epochs helps to stay below that threshold, and
:func:`detect_collapse` recognises a collapsed ``Z``.
"""

from __future__ import annotations

import math
from dataclasses import KW_ONLY, dataclass, field

import torch

from splitlearn.privacy.dcor import distance_correlation

__all__ = ["NoPeek", "detect_collapse"]


@dataclass
class NoPeek:
    """The penalty ``weight * dCor(x, z)`` of a training batch, ``weight = a1 / a2``, ramped.

    With ``ramp_epochs = k > 0`` epoch ``e`` (1-based) uses ``min(1, e / k)`` of the weight. The
    object is a ``Penalty``: call :meth:`set_epoch` before each epoch, e.g. with
    ``sim.fit(n, on_epoch=lambda r: nopeek.set_epoch(r["epoch"] + 1))``. The sample dCor, and so
    a good ``a1``, depends on the training batch size.

    >>> nopeek = NoPeek(1.5, ramp_epochs=3)
    >>> nopeek.weight
    0.5
    >>> nopeek.set_epoch(5)
    >>> nopeek.weight
    1.5
    >>> x = torch.randn(16, 4)
    >>> round(float(nopeek(x, x)), 6)
    1.5
    """

    a1: float
    _: KW_ONLY
    a2: float = 1.0
    ramp_epochs: int = 0
    epoch: int = field(default=1, init=False)

    def __post_init__(self) -> None:
        if not (math.isfinite(self.a1) and self.a1 >= 0):
            raise ValueError(f"NoPeek a1 must be a finite number >= 0, got {self.a1}")
        if not (math.isfinite(self.a2) and self.a2 > 0):
            raise ValueError(f"NoPeek a2 must be a finite number > 0, got {self.a2}")
        if isinstance(self.ramp_epochs, bool) or not isinstance(self.ramp_epochs, int) or self.ramp_epochs < 0:
            raise ValueError(f"ramp_epochs must be an int >= 0, got {self.ramp_epochs!r}")

    def set_epoch(self, epoch: int) -> None:
        """Use the weight of ``epoch`` (1-based) from now on."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
            raise ValueError(f"epoch must be an int >= 1, got {epoch!r}")
        self.epoch = epoch

    @property
    def weight(self) -> float:
        """The multiplier of ``dCor`` in the current epoch."""
        ramp = min(1.0, self.epoch / self.ramp_epochs) if self.ramp_epochs else 1.0
        return self.a1 / self.a2 * ramp

    def __call__(self, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        return self.weight * distance_correlation(x, z)


def detect_collapse(z: torch.Tensor, *, rtol: float = 1e-4) -> bool:
    """Whether smashed data ``z`` (n, ...) of held-out samples has collapsed to a constant.

    Criterion: every feature's standard deviation across the ``n`` samples is at most ``rtol``
    times the largest ``|z|`` (so an all-zero ``z``, e.g. from dead ReLUs, counts as collapsed).
    dCor is scale-invariant, so NoPeek cannot lower it by shrinking ``z``: driven to 0 it makes
    ``z`` constant, which carries no information to the server either (chance accuracy).

    >>> detect_collapse(torch.zeros(10, 3)), detect_collapse(torch.full((10, 3), 2.5))
    (True, True)
    >>> detect_collapse(torch.randn(10, 3))
    False
    """
    if z.dim() < 1 or len(z) < 2:
        raise ValueError(f"detect_collapse needs at least 2 samples, got shape {tuple(z.shape)}")
    z = z.detach().flatten(1).double()
    return bool(z.std(0, correction=0).max() <= rtol * z.abs().max())
