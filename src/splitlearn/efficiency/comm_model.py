"""Closed-form communication per epoch of split learning (SL) and federated learning (FL).

After Singh, Vepakomma, Gupta and Raskar (2019), "Detailed comparison of communication
efficiency of split learning and federated learning". Symbols, as in the paper:

- ``p``: data set size (samples over all clients together)
- ``k``: number of clients K, each holding p / K samples
- ``q``: cut-layer activation size per sample (values)
- ``n``: model parameters N (values)
- ``eta``: fraction of the N parameters held by the client segment

Every function counts values; multiply by the bytes per value (4 for float32) for bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["crossover", "crossover_figure", "fl_per_client", "fl_total", "sl_per_client", "sl_total"]


def _check(*, p: float, q: float, n: float, eta: float) -> None:
    if min(p, q, n) <= 0:
        raise ValueError(f"p, q and n must be positive, got p={p!r}, q={q!r}, n={n!r}")
    if not 0 <= eta <= 1:
        raise ValueError(f"eta must lie in [0, 1], got {eta!r}")


def sl_per_client(*, p: float, k: float, q: float, n: float, eta: float, relay: bool = True) -> float:
    """Values one SL client sends and receives per epoch: smashed data up, their gradients down,
    plus (``relay``) the client segment it receives from the previous client."""
    _check(p=p, q=q, n=n, eta=eta)
    # Singh et al. (2019): each of the client's p/K samples crosses the cut twice (q activations
    # forward, q gradients back), 2 (p/K) q; the weight relay adds the client segment, eta N.
    return 2 * p / k * q + (eta * n if relay else 0.0)


def fl_per_client(*, n: float) -> float:
    """Values one FL client sends and receives per epoch (one round)."""
    # Singh et al. (2019): the client downloads the global model and uploads its update, 2 N.
    return 2 * n


def sl_total(*, p: float, k: float, q: float, n: float, eta: float, relay: bool = True) -> float:
    """Values all K SL clients exchange per epoch."""
    # Singh et al. (2019): K times the per-client figure, 2 p q (+ eta N K with the relay).
    return k * sl_per_client(p=p, k=k, q=q, n=n, eta=eta, relay=relay)


def fl_total(*, k: float, n: float) -> float:
    """Values all K FL clients exchange per epoch."""
    # Singh et al. (2019): K times the per-client figure, 2 N K.
    return k * fl_per_client(n=n)


def crossover(*, p: float, q: float, n: float, eta: float, relay: bool = True) -> float:
    """The client count K* at which SL and FL cost each client (and so all clients) the same;
    above it SL communicates less."""
    _check(p=p, q=q, n=n, eta=eta)
    # 2 p q / K + eta N = 2 N  <=>  K* = 2 p q / ((2 - eta) N); without the relay K* = p q / N.
    return 2 * p * q / ((2 - (eta if relay else 0.0)) * n)


def crossover_figure(
    *,
    p: float,
    q: float,
    n: float,
    eta: float,
    relay: bool = True,
    bytes_per_value: int = 4,
    ks: Sequence[float] | None = None,
    title: str = "",
) -> Figure:
    """Per-client GB per epoch against K (log-log) for SL and FL, with the crossover K* marked.

    ``ks`` defaults to 200 geometric steps from 1 to 100 K*.
    """
    k_star = crossover(p=p, q=q, n=n, eta=eta, relay=relay)
    ks = np.geomspace(1, max(100 * k_star, 10), 200) if ks is None else np.asarray(ks, dtype=float)
    gb = bytes_per_value / 1e9
    sl = [sl_per_client(p=p, k=k, q=q, n=n, eta=eta, relay=relay) * gb for k in ks]
    fl = fl_per_client(n=n) * gb
    from matplotlib.figure import Figure  # here: matplotlib takes 0.3 s to import

    fig = Figure(figsize=(6.4, 4.2), layout="constrained")
    ax = fig.add_subplot()
    ax.loglog(ks, sl, label="split learning: 2 (p/K) q" + (" + ηN" if relay else ""))
    ax.loglog(ks, [fl] * len(ks), label="federated learning: 2 N")
    ax.axvline(k_star, color="gray", linestyle=":")
    ax.plot([k_star], [fl], "ko")
    ax.annotate(f"K* = {k_star:,.0f}", (k_star, fl), textcoords="offset points", xytext=(6, 8))
    ax.set_xlabel("clients K")
    ax.set_ylabel("GB per client per epoch")
    ax.set_title(title, fontsize="medium")
    ax.legend()
    return fig
