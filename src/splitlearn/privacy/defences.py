"""Defences against the attacks of :mod:`splitlearn.privacy.attacks`, and one registry of them.

Each defence names the attack target it protects (``"inputs"`` or ``"labels"``), where it runs
and what it does; a name is registered only once.

>>> sorted(DEFENCES)
['gradient_noise', 'max_norm', 'nopeek', 'smashed_dp']
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType

from splitlearn.privacy.attacks.label_leakage import plain_gradient, step_noise
from splitlearn.split.messages import Gradient, Message

__all__ = ["DEFENCES", "Defence", "MaxNormNoise", "defence", "register_defence"]


class MaxNormNoise:
    """The max-norm heuristic of Li et al. 2021 ("Label Leakage and Protection in Two-party Split
    Learning"): the label owner adds to each sample's cut gradient g_i zero-mean Gaussian noise of
    variance (max_j |g_j|² - |g_i|²) / d per value, so that every row's expected squared norm is
    the batch's largest, and the norm no longer ranks samples by label. Use as the ``outbox`` of
    the party that computes the loss (before any codec). A step's noise is drawn from ``seed``
    and the step id (a step run again after a roll back gets the same noise); without ``seed``,
    the seed is this party's own secret: the receiver must not be able to draw the noise again."""

    def __init__(self, *, seed: int | None = None) -> None:
        self._seed = secrets.randbits(40) if seed is None else seed

    def __repr__(self) -> str:
        return "MaxNormNoise()"

    def __call__(self, message: Message) -> Message:
        if not isinstance(message, Gradient):
            return message
        flat = plain_gradient(message, "MaxNormNoise").flatten(1)
        squared = flat.pow(2).sum(dim=1, keepdim=True)
        sigma = ((squared.max() - squared).clamp_min(0) / flat.shape[1]).sqrt()
        noise = step_noise(self._seed, message.step, flat) * sigma
        return Gradient(message.sender, message.receiver, message.step, src=message.src, dst=message.dst,
                        tensor=(flat + noise).view_as(message.tensor))


@dataclass(frozen=True)
class Defence:
    """A registered defence: what it protects (``target``), where it runs (``where``), how
    (``method``), and ``build(strength, seed=None)``, which returns it ready to use there (its
    noise from a secret seed unless ``seed`` is given, as in a reproducible experiment)."""

    name: str
    build: Callable[[float], Callable]
    target: str
    where: str
    method: str


_DEFENCES: dict[str, Defence] = {}
DEFENCES: MappingProxyType[str, Defence] = MappingProxyType(_DEFENCES)
"""Read-only view of the registered defences; add entries with :func:`register_defence`."""


def register_defence(name: str, build: Callable[[float], Callable], *, target: str, where: str, method: str) -> Defence:
    """Register defence ``name``; a name can be registered only once."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"defence name must be lowercase letters, digits and underscores, got {name!r}")
    if name in _DEFENCES:
        raise ValueError(f"defence {name!r} is already registered")
    if target not in ("inputs", "labels"):
        raise ValueError(f"defence {name!r}: target must be 'inputs' or 'labels', got {target!r}")
    if not callable(build):
        raise ValueError(f"defence {name!r}: {build!r} is not callable")
    for field, text in (("where", where), ("method", method)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"defence {name!r} needs a non-empty {field}")
    entry = Defence(name, build, target, where.strip(), method.strip())
    _DEFENCES[name] = entry
    return entry


def defence(name: str) -> Defence:
    """The registered defence ``name``; an unknown name is refused with the known ones."""
    try:
        return _DEFENCES[name]
    except KeyError:
        raise ValueError(f"unknown defence {name!r}; known defences: {', '.join(sorted(_DEFENCES))}") from None


def _register_builtin() -> None:
    from splitlearn.privacy.attacks.label_leakage import GradientNoise
    from splitlearn.privacy.dp import GaussianRelease
    from splitlearn.privacy.nopeek import NoPeek

    register_defence("nopeek", lambda a1, seed=None: NoPeek(a1), target="inputs", where="client loss (penalties= of a data node)",
                     method="Vepakomma et al. 2020: a1 * DCOR(X, Z) added to the client's loss; strength a1")
    register_defence("smashed_dp", lambda sigma, seed=None: GaussianRelease(sigma, 1.0, seed=seed), target="inputs",
                     where="client release (releases= of a data node)",
                     method="each sample's smashed data clipped to L2 norm 1 and Gaussian noise of std sigma added; "
                            "(ε, δ) from opacus's RDP accountant; strength sigma")
    register_defence("gradient_noise", lambda scale, seed=None: GradientNoise(scale, seed=seed), target="labels", where="label owner's outbox",
                     method="isotropic noise on the cut gradients, scale x the batch's mean gradient norm; strength scale")
    register_defence("max_norm", lambda _, seed=None: MaxNormNoise(seed=seed), target="labels", where="label owner's outbox",
                     method="Li et al. 2021: noise lifting every cut gradient's expected norm to the batch's largest")


_register_builtin()
