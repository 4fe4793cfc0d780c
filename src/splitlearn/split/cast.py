"""Dealing a split's segments and data to its parties, deterministically, before any transport:
every process of a deployment builds the same parties and keeps its own."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Protocol

import torch

from splitlearn.data.partition import deal
from splitlearn.split.configs import Split
from splitlearn.split.messages import Message
from splitlearn.split.party import Party, Penalty, Shard
from splitlearn.split.plan import Plan
from splitlearn.split.state import OptimizerSpec

__all__ = ["Cast", "build_parties", "role_labels"]


class Samples(Protocol):
    """A data set as build_parties reads it: features, labels and sample ids, row by row."""

    features: torch.Tensor
    labels: torch.Tensor
    sample_ids: torch.Tensor



@dataclass
class Cast:
    """The parties of a split before they are connected to any transport."""

    parties: dict[str, Party]
    data_parties: list[str]  # parties holding data, whose manifests the coordinator awaits
    clients: list[str]  # the parties taking turns at the single data role (empty when vertical)


def role_labels(plan: Plan, role: str, labels: torch.Tensor,
                targets: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None) -> dict[str, torch.Tensor]:
    """The targets of each task whose labels ``role`` holds, from class ``labels`` (``targets``
    maps a task to how its target derives from them; by default the labels themselves)."""
    return {h.task: (targets[h.task] if targets else (lambda y: y))(labels) for h in plan.root.heads if h.label_role == role}


def _leaf_shapes(split: Split, train: Samples) -> dict[str, tuple[int, ...]] | None:
    """One sample's shape at each data node (a vertical role's chunk of the features), or None
    when this process holds no features to tell (the clients bring their own)."""
    features = train.features
    if features is None or features.dim() < 2:
        return None
    roles = split.plan.data_roles
    return {n.name: tuple(chunk.shape[1:]) for role, chunk in zip(roles, split.cut_features(features[:1]), strict=True)
            for n in split.plan.nodes_of(role) if not n.inputs}


def build_parties(
    split: Split,
    *,
    train: Samples,
    test: Samples | None = None,
    clients: int = 1,
    partition: str = "iid",
    alpha: float = 0.5,
    optimizer: OptimizerSpec = OptimizerSpec(),
    seed: int = 0,
    device: str | torch.device = "cpu",
    targets: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    penalties: Mapping[str, Penalty] | None = None,
    releases: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
    compute: Callable[[str, str, int], AbstractContextManager] | None = None,
    outbox: Mapping[str, Callable[[Message], Message]] | None = None,
    inbox: Mapping[str, Callable[[Message], Message]] | None = None,
) -> Cast:
    """Deal the data and the segments of ``split`` to its parties, deterministically from ``seed``,
    so that every process of a deployment can rebuild the same parties and keep its own."""
    plan = split.plan
    device = torch.device(device)
    if clients < 1:
        raise ValueError(f"clients must be >= 1, got {clients}")
    tasks = [h.task for h in plan.root.heads]
    targets = dict(targets or {t: (lambda y: y) for t in tasks})
    if sorted(targets) != sorted(tasks):
        raise ValueError(f"targets {sorted(targets)} must name exactly the heads' tasks {sorted(tasks)}")
    datasets = {"train": train} | ({"test": test} if test is not None else {})
    label_roles = {h.label_role for h in plan.root.heads}

    def labels(ds: Samples, role: str, index=slice(None)) -> dict[str, torch.Tensor]:
        return role_labels(plan, role, ds.labels[index], targets)

    for what, hooks in (("outbox", outbox), ("inbox", inbox)):
        unknown_roles = set(hooks or {}) - set(plan.roles)
        if unknown_roles:
            raise ValueError(f"{what} names roles {sorted(unknown_roles)}; the plan's roles are {list(plan.roles)}")
    penalties, releases = dict(penalties or {}), dict(releases or {})
    for what, hooks in (("penalties", penalties), ("releases", releases)):
        unknown = set(hooks) - {n.name for n in plan.nodes if not n.inputs}
        if unknown:
            raise ValueError(f"{what} name {sorted(unknown)}, which are not data nodes of the plan")

    data_roles = plan.data_roles
    edges = split.edge_shapes(leaves) if (leaves := _leaf_shapes(split, train)) is not None else {}

    def party(name: str, role: str, shards=None, **kw) -> Party:
        mine = {k: v for k, v in penalties.items() if plan.node(k).role == role}
        return Party(name, role=role, plan=plan, optimizer=optimizer, shards=shards, device=device,
                     penalties=mine, releases={k: v for k, v in releases.items() if plan.node(k).role == role},
                     compute=compute, outbox=(outbox or {}).get(role), inbox=(inbox or {}).get(role),
                     edges=edges, **kw)

    parties: dict[str, Party] = {}
    if len(data_roles) == 1:
        role = data_roles[0]
        names = [role] if clients == 1 else [f"{role}{k}" for k in range(clients)]
        parts = (deal(train.labels, clients, partition=partition, alpha=alpha, seed=seed) if len(train.labels)
                 else [torch.empty(0, dtype=torch.long)] * clients)  # no data here: the clients bring their own
        test_shard = None if test is None else Shard(test.sample_ids, test.features, labels(test, role))
        template = copy.deepcopy(split.modules_of(role))
        for k, (name, idx) in enumerate(zip(names, parts)):
            shards = {"train": Shard(train.sample_ids[idx], train.features[idx], labels(train, role, idx))}
            if test_shard is not None:
                shards["test"] = test_shard
            parties[name] = party(
                name, role, shards,
                modules=split.modules_of(role) if k == 0 else None,
                make_modules=lambda: copy.deepcopy(template),
            )
        group = names
    else:
        if clients not in (1, len(data_roles)):
            raise ValueError(f"a vertical split has {len(data_roles)} clients, not {clients}")
        chunks = {s: split.cut_features(ds.features) for s, ds in datasets.items()}
        for i, role in enumerate(data_roles):
            shards = {s: Shard(ds.sample_ids, chunks[s][i], labels(ds, role)) for s, ds in datasets.items()}
            parties[role] = party(role, role, shards, modules=split.modules_of(role))
        group = []
    for role in plan.roles:
        if role in parties or role in data_roles:
            continue
        shards = {s: Shard(ds.sample_ids, None, labels(ds, role)) for s, ds in datasets.items()} if role in label_roles else None
        parties[role] = party(role, role, shards, modules=split.modules_of(role))
    return Cast(parties, [n for n, p in parties.items() if p.shards], group)

