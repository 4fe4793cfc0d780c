"""Attacks on split learning, and one registry of them: name -> callable and threat model.

Each attack module states its threat model (who attacks, what they see, what they hold) in its
docstring; the registry carries that text with the callable, so a report or an experiment can
print, next to every result, what the attacker was assumed to hold.

>>> sorted(ATTACKS)
['hijacking', 'inversion', 'label_clustering', 'label_direction', 'label_norm', 'model_completion', 'reconstruction']
>>> ATTACKS["inversion"].target
'inputs'
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType, ModuleType

__all__ = ["ATTACKS", "Attack", "attack", "register_attack", "threat_model_of"]

TARGETS = ("inputs", "labels")


@dataclass(frozen=True)
class Attack:
    """A registered attack: what it infers (``target``: ``"inputs"`` or ``"labels"``), how
    (``method``, one line), under which assumptions (``threat_model``) and the callable itself
    (its signature is the attack module's; see ``help(attack.run)``)."""

    name: str
    run: Callable
    target: str
    method: str
    threat_model: str


_ATTACKS: dict[str, Attack] = {}
ATTACKS: MappingProxyType[str, Attack] = MappingProxyType(_ATTACKS)
"""Read-only view of the registered attacks; add entries with :func:`register_attack`."""


def register_attack(name: str, run: Callable, *, target: str, method: str, threat_model: str) -> Attack:
    """Register ``run`` as attack ``name``; a name can be registered only once."""
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise ValueError(f"attack name must be lowercase letters, digits and underscores, got {name!r}")
    if name in _ATTACKS:
        raise ValueError(f"attack {name!r} is already registered (as {_ATTACKS[name].run.__module__}.{_ATTACKS[name].run.__qualname__})")
    if not callable(run):
        raise ValueError(f"attack {name!r}: {run!r} is not callable")
    if target not in TARGETS:
        raise ValueError(f"attack {name!r}: target must be one of {TARGETS}, got {target!r}")
    for field, text in (("method", method), ("threat_model", threat_model)):
        if not isinstance(text, str) or not text.strip():
            raise ValueError(f"attack {name!r} needs a non-empty {field}")
    entry = Attack(name, run, target, method.strip(), threat_model.strip())
    _ATTACKS[name] = entry
    return entry


def attack(name: str) -> Attack:
    """The registered attack ``name``; an unknown name is refused with the known ones."""
    try:
        return _ATTACKS[name]
    except KeyError:
        raise ValueError(f"unknown attack {name!r}; known attacks: {', '.join(sorted(_ATTACKS))}") from None


def threat_model_of(module: ModuleType) -> str:
    """The paragraph of ``module``'s docstring that starts with "Threat model:", on one line."""
    for paragraph in inspect.cleandoc(module.__doc__ or "").split("\n\n"):
        if paragraph.startswith("Threat model:"):
            return " ".join(paragraph.removeprefix("Threat model:").split())
    raise ValueError(f"{module.__name__} states no threat model (a docstring paragraph starting 'Threat model:')")


def _register_builtin() -> None:
    from splitlearn.privacy.attacks import hijacking, inversion, label_leakage, model_completion, reconstruction

    register_attack(
        "reconstruction", reconstruction.reconstruction_attack, target="inputs",
        method="an MLP decoder from smashed data to inputs, trained on auxiliary pairs; scored by MSE and SSIM",
        threat_model=threat_model_of(reconstruction),
    )
    register_attack(
        "inversion", inversion.inversion_attack, target="inputs",
        method="UnSplit (Erdoğan et al. 2022): candidate inputs and a surrogate client of the known architecture, "
               "optimised jointly to reproduce the smashed data, with a total-variation prior; scored by MSE and SSIM",
        threat_model=threat_model_of(inversion),
    )
    register_attack(
        "hijacking", hijacking.hijack, target="inputs",
        method="FSHA (Pasquini et al. 2021): a malicious server sends the gradient that pushes the client's smashed data "
               "into the feature space of a pilot network it trained with an inverse on public data, then decodes it; "
               "scored by MSE and SSIM. The client's check: fake batches with random labels (after SplitGuard)",
        threat_model=threat_model_of(hijacking),
    )
    labels = threat_model_of(label_leakage)
    register_attack(
        "label_norm", label_leakage.norm_scores, target="labels",
        method="Li et al. 2021: per-sample norm of the cut gradient ranks samples by label (binary tasks; leak AUC)",
        threat_model=labels,
    )
    register_attack(
        "label_direction", label_leakage.direction_scores, target="labels",
        method="Li et al. 2021: cosine of each cut gradient with a class direction tracked over steps (binary tasks; leak AUC)",
        threat_model=labels,
    )
    register_attack(
        "label_clustering", label_leakage.cluster_accuracy, target="labels",
        method="k-means on the unit cut gradients of each step, best cluster-to-label matching (multi-class; accuracy)",
        threat_model=labels,
    )
    register_attack(
        "model_completion", model_completion.model_completion_attack, target="labels",
        method="Fu et al. 2022 (passive): a small top model on the bottom outputs, fitted to a handful of labelled "
               "samples, infers the other labels; scored by accuracy against chance and, for binary tasks, AUC",
        threat_model=threat_model_of(model_completion),
    )


_register_builtin()
