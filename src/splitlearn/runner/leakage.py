"""Held-out DCOR(X, Z) of the data parties, measured where their data is, and the (ε, δ) of DP noise
on the smashed data."""

from __future__ import annotations

from typing import Any

import torch

from splitlearn.config import RunConfig
from splitlearn.privacy import detect_collapse, epsilon, leakage
from splitlearn.split.party import Party
from splitlearn.split.simulation import Simulation

__all__ = ["client_leakage", "party_leakage", "privacy_spent"]


def party_leakage(party: Party, *, split: str = "test", batch_size: int = 64,
                  shuffled: bool = False) -> tuple[dict[str, float], bool]:
    """Held-out DCOR(X, Z) between ``party``'s raw features of ``split`` and the smashed data
    each of its data segments sends, computed on its own data (node -> DCOR; none where it holds
    no segments or fewer than ``batch_size`` samples); and whether any Z has collapsed."""
    shard = party.shards.get(split)
    by_node, collapsed = {}, False
    if not party.holds_weights or shard is None or shard.features is None or len(shard.features) < batch_size:
        return by_node, collapsed
    for node in (n for n in party.nodes.values() if not n.inputs):
        module = party.modules[node.name]
        was_training = module.training
        module.eval()
        release = party.releases.get(node.name, lambda z: z)  # DCOR of what the receiver is given (e.g. noised)
        encode = lambda x, module=module, release=release: release(module(x.to(party.device))).cpu()  # noqa: E731
        by_node[node.name] = leakage(encode, shard.features, batch_size=batch_size, shuffled=shuffled)
        with torch.no_grad():
            collapsed |= detect_collapse(encode(shard.features[: 4 * batch_size]))
        module.train(was_training)
    return by_node, collapsed


def client_leakage(sim: Simulation, *, split: str = "test", batch_size: int = 64, shuffled: bool = False) -> dict[str, Any]:
    """Held-out DCOR(X, Z) of every data party here (:func:`party_leakage`), and whether Z has collapsed.

    Returns ``dcor`` (the mean over data parties), ``dcor_by_party`` and ``collapsed``. With
    ``shuffled=True``, ``dcor`` is the statistic's floor at this batch size instead: X against
    its Z in shuffled order (see :func:`~splitlearn.privacy.leakage`).
    """
    by_party, collapsed = {}, False
    for name, party in sim.parties.items():
        by_node, hit = party_leakage(party, split=split, batch_size=batch_size, shuffled=shuffled)
        collapsed |= hit
        by_party |= {(f"{name}/{node}" if len(party.nodes) > 1 else name): d for node, d in by_node.items()}
    if not by_party:
        return {}
    return {"dcor": sum(by_party.values()) / len(by_party), "dcor_by_party": by_party, "collapsed": collapsed}




def privacy_spent(config: RunConfig, sim: Simulation, epochs: int) -> dict[str, float]:
    """With DP noise on the smashed data (``privacy.dp_noise_multiplier``): ``dp_epsilon`` after
    ``epochs`` training epochs (each releases every training sample once) at ``dp_delta`` = 1/n,
    n the training samples the data parties announced; empty without DP noise."""
    p = config.privacy
    if not p.dp_noise_multiplier:
        return {}
    c = sim.coordinator
    n = sum(len(c.manifests[name]["train"]) for name in c.clients) if c.group_role is not None else len(c.aligned["train"])
    delta = 1.0 / max(n, 2)
    return {"dp_epsilon": epsilon(p.dp_noise_multiplier, epochs, delta=delta), "dp_delta": delta}
