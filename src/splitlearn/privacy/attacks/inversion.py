"""Model inversion without auxiliary data (UnSplit: Erdoğan, Küpçü and Çiçek 2022, "UnSplit:
Data-Oblivious Model Inversion, Model Stealing, and Label Inference Attacks Against Split
Learning", WPES '22).

Threat model: an honest-but-curious party that receives a client's smashed data (the server, or
the next hop) records it off the wire. It holds no auxiliary data and no input-output pairs of
the client, and never sees the client's weights. It knows the architecture of the client's
segment (the model is agreed before training) and the domain of the inputs (images with pixels in
``[0, 1]``, say). It starts from a freshly initialised copy of that architecture, the
*surrogate*, and from blank candidate inputs ``X'``, and minimises
``MSE(surrogate(X'), Z) + tv * TV(X')`` over both the candidates and the surrogate's weights,
where ``Z`` is the smashed data it saw and TV the total variation (natural images are smooth).
Success is measured on the victim's private inputs with MSE and SSIM, the scoring of
:mod:`~splitlearn.privacy.attacks.reconstruction`.

UnSplit alternates blocks of steps on ``X'`` and on the surrogate; here both take one Adam step
per iteration, on the whole recorded batch at once, so that a single surrogate has to explain
every sample. The attack is strongest at shallow cuts. Behind one convolution and a ReLU it
recovers digits almost exactly; deeper, the surrogate has so much freedom that the candidates
first approach the inputs and then drift away while the fit to ``Z`` keeps improving, and an
attacker without the inputs cannot tell when to stop.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from splitlearn.privacy.attacks.reconstruction import ReconstructionResult, score_reconstruction

__all__ = ["fresh_surrogate", "invert", "inversion_attack", "total_variation"]


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation of images ``(n, c, h, w)``: the mean absolute difference of
    vertically and of horizontally adjacent pixels, summed.

    >>> float(total_variation(torch.ones(2, 1, 4, 4)))
    0.0
    >>> float(total_variation(torch.tensor([[[[0.0, 1.0], [0.0, 1.0]]]])))
    1.0
    """
    if x.dim() != 4:
        raise ValueError(f"total variation needs (n, c, h, w) images, got shape {tuple(x.shape)}")
    return (x[..., 1:, :] - x[..., :-1, :]).abs().mean() + (x[..., :, 1:] - x[..., :, :-1]).abs().mean()


def fresh_surrogate(architecture: nn.Module, *, seed: int = 0) -> nn.Module:
    """A copy of ``architecture`` with every parameter re-initialised (seeded): what an attacker
    who knows the client's architecture but not its weights can build. The module passed is left
    untouched, and none of its weights survive in the copy."""
    surrogate = copy.deepcopy(architecture)
    with torch.random.fork_rng(devices=[]):  # the caller's RNG is left alone
        torch.manual_seed(seed)
        for module in surrogate.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
    owned = {id(p) for m in surrogate.modules() if hasattr(m, "reset_parameters") for p in m.parameters(recurse=False)}
    if any(id(p) not in owned for p in surrogate.parameters()):
        raise ValueError("the architecture has parameters outside modules with reset_parameters(); "
                         "the surrogate would keep the client's weights")
    return surrogate.train()


def invert(
    victim_z: torch.Tensor,
    architecture: nn.Module,
    *,
    in_shape: Sequence[int],
    steps: int = 1000,
    tv: float = 0.01,
    lr: float = 0.05,
    surrogate_lr: float = 1e-3,
    input_range: tuple[float, float] = (0.0, 1.0),
    seed: int = 0,
) -> torch.Tensor:
    """Candidate inputs ``(n, *in_shape)`` whose image under a jointly fitted surrogate of
    ``architecture`` (re-initialised, see :func:`fresh_surrogate`) matches ``victim_z``.

    ``tv`` weighs the total-variation prior (images only, 0 to disable); candidates are kept in
    ``input_range`` after every step.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not tv >= 0 or not lr > 0 or not surrogate_lr > 0:
        raise ValueError(f"tv must be >= 0 and the learning rates > 0, got tv={tv}, lr={lr}, surrogate_lr={surrogate_lr}")
    low, high = input_range
    if not low < high:
        raise ValueError(f"input_range must be (low, high) with low < high, got {input_range!r}")
    shape = tuple(int(d) for d in in_shape)
    if tv and len(shape) != 3:
        raise ValueError(f"the total-variation prior needs image inputs (C, H, W), got in_shape {shape}; pass tv=0")
    z = victim_z.detach()
    if len(z) < 1:
        raise ValueError("no smashed data to invert")
    surrogate = fresh_surrogate(architecture, seed=seed).to(z.device)
    g = torch.Generator(device="cpu").manual_seed(seed)
    mid, spread = (low + high) / 2, (high - low) / 20
    candidates = (mid + spread * (torch.rand((len(z), *shape), generator=g) - 0.5)).to(z.device).requires_grad_()
    opt_x = torch.optim.Adam([candidates], lr=lr)
    opt_w = torch.optim.Adam(surrogate.parameters(), lr=surrogate_lr)
    for _ in range(steps):
        out = surrogate(candidates)
        if out.shape != z.shape:
            raise ValueError(f"the architecture maps inputs {shape} to {tuple(out.shape[1:])}, but the smashed data is {tuple(z.shape[1:])}")
        loss = F.mse_loss(out, z)
        if tv:
            loss = loss + tv * total_variation(candidates)
        opt_x.zero_grad()
        opt_w.zero_grad()
        loss.backward()
        opt_x.step()
        opt_w.step()
        with torch.no_grad():
            candidates.clamp_(low, high)
    return candidates.detach()


def inversion_attack(
    victim_z: torch.Tensor, architecture: nn.Module, victim_x: torch.Tensor, *, show: int = 8, **invert_kw
) -> ReconstructionResult:
    """Invert the victim's smashed data with no auxiliary data (:func:`invert`) and score the
    candidates against the victim's private inputs ``victim_x`` (MSE, SSIM)."""
    recon = invert(victim_z, architecture, in_shape=tuple(victim_x.shape[1:]), **invert_kw)
    return score_reconstruction(recon.cpu(), victim_x.cpu(), show=show)
