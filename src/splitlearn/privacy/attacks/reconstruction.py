"""Reconstruction (model inversion) of private inputs from smashed data.

Threat model: a curious party that receives a client's smashed data (the server, or the next hop)
records it off the wire. It also holds auxiliary data from the same distribution, disjoint from
the victim's, together with the smashed data of those samples: for example it colludes with one
client, or queries the client segment through a prediction service. It trains a decoder from
smashed data to inputs on the auxiliary pairs and applies it to the victim's recorded smashed
data. Success is measured on the victim's private inputs with MSE and SSIM.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from splitlearn.split.compression import as_tensor
from splitlearn.split.messages import Activation, Message

__all__ = ["ActivationRecorder", "ReconstructionResult", "mlp_decoder", "reconstruction_attack", "score_reconstruction", "ssim",
           "train_decoder"]


@dataclass
class ActivationRecorder:
    """Transport observer: the smashed data sent to ``attacker`` from node ``src``, by sample id
    (decoded, as the attacker receives it, when it travels compressed)."""

    attacker: str
    src: str | None = None
    batches: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)

    def __call__(self, message: Message) -> None:
        if isinstance(message, Activation) and message.receiver == self.attacker and self.src in (None, message.src):
            self.batches.append((message.sample_ids, as_tensor(message.tensor).detach().cpu()))

    def smashed(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(sample ids, smashed data) of the most recent sighting of each sample."""
        if not self.batches:
            raise ValueError(f"{self.attacker} recorded no smashed data")
        latest: dict[int, torch.Tensor] = {}
        for ids, z in self.batches:
            latest.update(zip(ids.tolist(), z))
        ids = torch.tensor(sorted(latest))
        return ids, torch.stack([latest[i] for i in ids.tolist()])


def _gaussian_window(size: int, sigma: float, dtype, device) -> torch.Tensor:
    x = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return g[:, None] * g[None, :]


def ssim(x: torch.Tensor, y: torch.Tensor, *, data_range: float = 1.0, window: int = 7, sigma: float = 1.5) -> torch.Tensor:
    """Mean structural similarity (Wang et al. 2004) per image, Gaussian window, valid region.

    ``x`` and ``y`` are (n, c, h, w); channels are averaged. The window shrinks to the image
    size (odd) for small images such as 8x8 digits.

    >>> img = torch.rand(2, 1, 16, 16)
    >>> torch.allclose(ssim(img, img), torch.ones(2))
    True
    """
    if x.shape != y.shape or x.dim() != 4:
        raise ValueError(f"ssim needs two (n, c, h, w) tensors of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
    window = min(window, x.shape[-1], x.shape[-2])
    window -= 1 - window % 2
    if window < 3:
        raise ValueError(f"images of {tuple(x.shape[-2:])} are too small for SSIM (a 3x3 window at least)")
    c = x.shape[1]
    w = _gaussian_window(window, sigma, x.dtype, x.device).expand(c, 1, window, window)
    mu_x, mu_y = F.conv2d(x, w, groups=c), F.conv2d(y, w, groups=c)
    var_x = F.conv2d(x * x, w, groups=c) - mu_x**2
    var_y = F.conv2d(y * y, w, groups=c) - mu_y**2
    cov = F.conv2d(x * y, w, groups=c) - mu_x * mu_y
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * mu_x * mu_y + c1) * (2 * cov + c2)) / ((mu_x**2 + mu_y**2 + c1) * (var_x + var_y + c2))
    return s.flatten(1).mean(1)


def mlp_decoder(d_in: int, shape, *, hidden: int = 512) -> nn.Sequential:
    """An MLP from flattened smashed data (``d_in`` values) to inputs of ``shape`` in [0, 1]: two
    hidden ReLU layers, a sigmoid out."""
    return nn.Sequential(
        nn.Flatten(), nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
        nn.Linear(hidden, int(torch.Size(shape).numel())), nn.Sigmoid(), nn.Unflatten(1, tuple(shape)),
    )


def train_decoder(
    z: torch.Tensor, x: torch.Tensor, *, epochs: int = 60, hidden: int = 512, lr: float = 1e-3, batch_size: int = 64, seed: int = 0
) -> nn.Module:
    """Fit an MLP decoder from smashed data ``z`` to inputs ``x`` (in [0, 1]) on auxiliary pairs."""
    if len(z) != len(x) or len(z) < 2:
        raise ValueError(f"need at least 2 auxiliary pairs with as many inputs as smashed rows, got {len(z)} and {len(x)}")
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, caller's RNG left alone
        torch.manual_seed(seed)
        decoder = mlp_decoder(z[0].numel(), x.shape[1:], hidden=hidden).to(z.device)
    opt = torch.optim.Adam(decoder.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(z), generator=g).split(batch_size):
            loss = F.mse_loss(decoder(z[idx]), x[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return decoder.eval()


@dataclass(frozen=True)
class ReconstructionResult:
    mse: float
    ssim: float
    originals: torch.Tensor  # a few private inputs, for a picture
    reconstructions: torch.Tensor


def reconstruction_attack(
    aux_z: torch.Tensor, aux_x: torch.Tensor, victim_z: torch.Tensor, victim_x: torch.Tensor, *, show: int = 8, **decoder_kw
) -> ReconstructionResult:
    """Train the decoder on auxiliary pairs, reconstruct the victim's inputs, score them."""
    decoder = train_decoder(aux_z, aux_x, **decoder_kw)
    with torch.no_grad():
        recon = decoder(victim_z)
    return score_reconstruction(recon, victim_x, show=show)


def score_reconstruction(recon: torch.Tensor, victim_x: torch.Tensor, *, show: int = 8) -> ReconstructionResult:
    """MSE and mean SSIM of reconstructions against the private inputs (SSIM is NaN for inputs
    that are not images of 3x3 or more; flat features count as one row of pixels)."""
    if recon.numel() != victim_x.numel() or len(recon) != len(victim_x):
        raise ValueError(f"reconstructions {tuple(recon.shape)} do not match the private inputs {tuple(victim_x.shape)}")
    recon = recon.detach().reshape(victim_x.shape)
    images = victim_x if victim_x.dim() == 4 else victim_x.reshape(len(victim_x), 1, 1, -1)
    score = ssim(recon.reshape(images.shape), images).mean() if images.shape[-1] >= 3 and images.shape[-2] >= 3 else torch.tensor(float("nan"))
    return ReconstructionResult(
        mse=float(F.mse_loss(recon, victim_x)), ssim=float(score), originals=victim_x[:show].clone(), reconstructions=recon[:show].clone()
    )
