"""Sample distance covariance and distance correlation (Székely, Rizzo & Bakirov, 2007).

For samples ``x`` (n, ...) and ``z`` (n, ...), each flattened to one vector per sample, let
``a[i, j] = ||x_i - x_j||`` be the Euclidean (not squared) distances and ``A`` their double
centring (row, column and grand means removed); likewise ``B`` for ``z``. Then

* ``dCov²(x, z) = mean(A * B)`` (the V-statistic, always >= 0),
* ``dCor²(x, z) = dCov²(x, z) / sqrt(dCov²(x, x) * dCov²(z, z))``, and 0 when either side has
  zero distance variance (e.g. a constant ``z``).

Both functions return the non-squared quantity by default, as ``dcor.distance_covariance`` and
``dcor.distance_correlation`` do; ``squared=True`` gives ``dCov²`` and ``dCor²``, as
``dcor.distance_covariance_sqr`` and ``dcor.distance_correlation_sqr`` do. ``dCor`` lies in
[0, 1] (up to rounding) and is 0 in the population only for independent variables.

``batched=True`` takes (batch, n, ...) and returns one value per batch entry. Everything is
differentiable torch on any device: memory is O(n² + n·d), there is no loop over samples, and
square roots are taken safely (0, with gradient 0, below a few ulps), so values and gradients
stay finite at duplicate rows and at zero variance. The sample ``dCor`` is biased upwards by an amount that depends on ``n``: compare
values only at one fixed batch size (:func:`leakage` does).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

__all__ = ["distance_correlation", "distance_covariance", "leakage"]


def _safe_sqrt(t: torch.Tensor, tol: torch.Tensor | float = 0.0) -> torch.Tensor:
    """``sqrt(t)`` where ``t > tol``, else 0; the gradient is 0 (not inf or NaN) where masked."""
    keep = t > tol
    return torch.where(keep, torch.sqrt(torch.where(keep, t, torch.ones_like(t))), torch.zeros_like(t))


def _centred_distances(x: torch.Tensor) -> torch.Tensor:
    """Double-centred Euclidean distance matrices (..., n, n) of samples (..., n, d)."""
    x = x - x.mean(-2, keepdim=True)  # distances are shift-invariant; centring limits cancellation
    gram = x @ x.mT
    sq = gram.diagonal(dim1=-2, dim2=-1)
    norms = sq[..., :, None] + sq[..., None, :]
    # Squared distances from the Gram matrix: exact duplicates cancel to ~0, which the tolerance
    # (a few ulps of the norms) maps to exactly 0 before the square root.
    a = _safe_sqrt((norms - 2 * gram).clamp_min(0), 8 * torch.finfo(x.dtype).eps * norms)
    row = a.mean(-1, keepdim=True)
    return a - row - row.mT + row.mean(-2, keepdim=True)


def _prepare(x: torch.Tensor, z: torch.Tensor, batched: bool) -> tuple[torch.Tensor, torch.Tensor]:
    lead = 2 if batched else 1
    for name, t in (("x", x), ("z", z)):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            raise ValueError(f"distance correlation needs floating-point tensors; {name} is {getattr(t, 'dtype', type(t))}")
        if t.dim() < lead:
            raise ValueError(f"{name} must have shape {'(batch, n, ...)' if batched else '(n, ...)'}, got {tuple(t.shape)}")
    if x.shape[:lead] != z.shape[:lead]:
        what = "batch and sample dims" if batched else "sample counts"
        raise ValueError(f"x and z must agree in {what}: x has {tuple(x.shape[:lead])}, z has {tuple(z.shape[:lead])}")
    if x.shape[lead - 1] < 2:
        raise ValueError(f"distance correlation needs at least 2 samples, got {x.shape[lead - 1]}")
    return x.flatten(lead), z.flatten(lead)


def _moments(x: torch.Tensor, z: torch.Tensor, batched: bool) -> tuple[torch.Tensor, ...]:
    """``dCov²(x, z)``, ``dCov²(x, x)`` and ``dCov²(z, z)``."""
    a, b = (_centred_distances(t) for t in _prepare(x, z, batched))
    return ((a * b).mean((-2, -1)), (a * a).mean((-2, -1)), (b * b).mean((-2, -1)))


def distance_covariance(x: torch.Tensor, z: torch.Tensor, *, squared: bool = False, batched: bool = False) -> torch.Tensor:
    """Sample distance covariance ``dCov(x, z)`` (V-statistic); ``dCov²`` with ``squared=True``.

    ``x`` and ``z`` are (n, ...) with one sample per row, or (batch, n, ...) with
    ``batched=True``, which returns one value per batch entry.

    >>> x = torch.tensor([[0.0], [1.0], [2.0]])
    >>> round(float(distance_covariance(x, x, squared=True)), 4)  # = mean(A * A)
    0.4938
    """
    dcov2 = _moments(x, z, batched)[0]
    return dcov2 if squared else _safe_sqrt(dcov2)


def distance_correlation(x: torch.Tensor, z: torch.Tensor, *, squared: bool = False, batched: bool = False) -> torch.Tensor:
    """Sample distance correlation ``dCor(x, z)`` in [0, 1]; ``dCor²`` with ``squared=True``.

    Shapes as for :func:`distance_covariance`. 0 where ``x`` or ``z`` is constant.

    >>> x = torch.randn(32, 5, generator=torch.Generator().manual_seed(0))
    >>> round(float(distance_correlation(x, 2 * x + 1)), 6)
    1.0
    >>> float(distance_correlation(x, torch.zeros(32, 3)))
    0.0
    """
    dcov2, var_x, var_z = _moments(x, z, batched)
    scale = _safe_sqrt(var_x) * _safe_sqrt(var_z)
    positive = scale > 0
    r2 = torch.where(positive, dcov2 / torch.where(positive, scale, torch.ones_like(scale)), torch.zeros_like(scale))
    return r2 if squared else _safe_sqrt(r2)


def leakage(
    encoder_fn: Callable[[torch.Tensor], torch.Tensor],
    features: torch.Tensor,
    *,
    batch_size: int = 64,
    squared: bool = False,
    shuffled: bool = False,
    seed: int = 0,
) -> float:
    """Mean ``dCor(X, encoder_fn(X))`` over consecutive batches of ``batch_size`` held-out rows.

    The last incomplete batch is dropped: the bias of the sample ``dCor`` depends on ``n``, so
    numbers are comparable only at the same ``batch_size`` (and on the same rows; shuffle
    class-sorted data beforehand). ``encoder_fn`` (e.g. a client segment in eval mode) runs
    without gradients; ``X`` is moved to the device of its output.

    ``shuffled=True`` pairs each batch's ``X`` with its ``Z`` rows in a random order (seeded by
    ``seed``): the value for a ``Z`` with the same distribution but independent of ``X``. That is
    the floor of the statistic at this batch size (it is 0 only as ``n`` grows), so a reading
    near it says no dependence is detectable at this ``n``.

    >>> x = torch.randn(100, 4, generator=torch.Generator().manual_seed(0))
    >>> leakage(lambda b: b[:, :2], x, batch_size=50) > 0.5
    True
    >>> leakage(lambda b: b[:, :2], x, batch_size=50, shuffled=True) < 0.5
    True
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (distance correlation needs at least 2 samples), got {batch_size}")
    batches = len(features) // batch_size
    if batches == 0:
        raise ValueError(f"leakage needs at least batch_size={batch_size} rows, got {len(features)}")
    xs = features[: batches * batch_size].reshape(batches, batch_size, *features.shape[1:])
    with torch.no_grad():
        zs = torch.stack([encoder_fn(xb) for xb in xs])
        if shuffled:
            g = torch.Generator().manual_seed(seed)
            zs = torch.stack([z[torch.randperm(batch_size, generator=g).to(z.device)] for z in zs])
        return float(distance_correlation(xs.to(zs.device), zs, squared=squared, batched=True).mean())
