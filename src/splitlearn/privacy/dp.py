"""Differential privacy for the smashed data: each sample's cut-layer output clipped and noised
before it leaves the client (the Gaussian mechanism), with ε from opacus's accountant.

Threat model: the party receiving the smashed data (the server, or the next hop), holding
everything it receives during training and evaluation, tries to learn about any one input x of
the client's data. With per-sample clipping to L2 norm ``clip`` and Gaussian noise of standard
deviation ``noise_multiplier * clip``, each release of a sample's Z is a Gaussian mechanism
(neighbouring data sets: one sample added or removed, as opacus counts them). A training epoch
releases each training sample once; the receiver's gradients back are computed from what it was
given (post-processing). So after E epochs the smashed data it saw is (ε, δ)-DP for each training
sample with ε of E Gaussian mechanisms composed, which :func:`epsilon` asks opacus's RDP
accountant for. Each evaluation pass likewise releases each test sample once.

Not covered: the client's own weights, which depend on its raw data without noise (they never
leave it in vanilla and U-shaped training with one client, but round-robin relays hand them to
the next client); the labels, which a vanilla client sends in the clear. The noise comes from
torch's generator, seeded from the operating system's randomness unless a seed is given for a
test; it is not a cryptographic generator (opacus's ``secure_mode`` discussion applies).
"""

from __future__ import annotations

import secrets
import warnings

import torch

__all__ = ["GaussianRelease", "epsilon"]


class GaussianRelease:
    """Clip each sample's smashed data to L2 norm ``clip`` and add N(0, (noise_multiplier * clip)²)
    noise to every value: what a client sends instead of Z. Gradients flow through the clipping
    (the noise is a constant of the step), so the client trains on the Z it released."""

    def __init__(self, noise_multiplier: float, clip: float, *, seed: int | None = None) -> None:
        if not noise_multiplier > 0:
            raise ValueError(f"noise_multiplier must be > 0, got {noise_multiplier}")
        if not clip > 0:
            raise ValueError(f"clip must be > 0, got {clip}")
        self.noise_multiplier, self.clip = float(noise_multiplier), float(clip)
        self.generator = torch.Generator().manual_seed(secrets.randbits(63) if seed is None else seed)

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        flat = z.flatten(1)
        norms = flat.detach().norm(dim=1, keepdim=True)
        clipped = flat * (self.clip / norms.clamp_min(1e-12)).clamp(max=1.0)
        noise = torch.randn(flat.shape, generator=self.generator, dtype=flat.dtype).to(flat.device)
        return (clipped + noise * (self.noise_multiplier * self.clip)).view_as(z)

    def __repr__(self) -> str:
        return f"GaussianRelease(noise_multiplier={self.noise_multiplier}, clip={self.clip})"


def epsilon(noise_multiplier: float, releases: int, *, delta: float) -> float:
    """ε of ``releases`` Gaussian mechanisms of this noise multiplier composed, at ``delta``, from
    opacus's RDP accountant (each sample in every release: sample rate 1). For very little noise
    (ε in the hundreds) it is an upper bound: the accountant's best order is then its smallest."""
    if releases < 1:
        raise ValueError(f"releases must be >= 1, got {releases}")
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    from opacus.accountants import RDPAccountant  # here: opacus takes about 2 s to import

    accountant = RDPAccountant()
    accountant.history = [(float(noise_multiplier), 1.0, int(releases))]
    with warnings.catch_warnings():  # for little noise the best order is the smallest one tried: ε is then an upper bound
        warnings.filterwarnings("ignore", message="Optimal order is the", category=UserWarning)
        return float(accountant.get_epsilon(delta=delta))
