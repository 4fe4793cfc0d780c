"""Split configurations: each builds a :class:`Split` (a plan plus the segment of every node).

Every builder cuts real ``torch.nn`` modules with :func:`split_model`; the segments share the
parameters of the model passed in, so the unsplit model is the exact centralised reference.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from splitlearn.data.partition import vertical_split
from splitlearn.split.graph import CAPTURE_LOCK
from splitlearn.split.plan import Head, Node, Plan, merge_inputs
from splitlearn.split.segments import CutError, check_segments, split_model

__all__ = ["CONFIGURATIONS", "MultiHead", "Split", "Vertical", "multihop", "multitask", "ushaped", "vanilla", "vertical"]

Cut = int | str | Sequence[int | str]


@dataclass
class Split:
    """A plan and the module of each of its nodes; ``source`` is the model they were cut from.

    ``keys`` maps each node to ``{segment state_dict key: the source's state_dict keys}`` (a tied
    weight has several), found by tensor identity when the split is made, so trained segments can
    be put back under the source model's own keys.
    """

    plan: Plan
    modules: dict[str, nn.Module]
    feature_dim: int | None = None  # vertical: the batched-feature dim cut between data roles
    feature_sizes: tuple[int, ...] | None = None  # vertical: each data role's width along it (None: near-equal chunks)
    source: nn.Module | None = None
    keys: dict[str, dict[str, list[str]]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        names = {n.name for n in self.plan.nodes}
        if set(self.modules) != names:
            raise ValueError(f"modules {sorted(self.modules)} do not match plan nodes {sorted(names)}")
        if self.source is not None:
            original: dict[int, list[str]] = {}
            for k, t in self.source.state_dict(keep_vars=True).items():
                original.setdefault(id(t), []).append(k)
            self.keys = {
                node: {k: original[id(t)] for k, t in m.state_dict(keep_vars=True).items() if id(t) in original}
                for node, m in self.modules.items()
            }

    def cut_features(self, features: torch.Tensor) -> list[torch.Tensor]:
        """Each data role's chunk of a batch of ``features``, in the order of ``plan.data_roles``."""
        roles = self.plan.data_roles
        if len(roles) == 1:
            return [features]
        if self.feature_dim is None:
            raise ValueError("a split with several data roles needs split.feature_dim")
        return vertical_split(features, self.feature_sizes or len(roles), dim=self.feature_dim)

    def modules_of(self, role: str) -> dict[str, nn.Module]:
        return {n.name: self.modules[n.name] for n in self.plan.nodes_of(role)}

    def edge_shapes(self, leaf_shapes: Mapping[str, Sequence[int]]) -> dict[tuple[str, str], tuple[int, ...]]:
        """The per-sample shape of what crosses each edge ``(src, dst)`` of the plan, for one
        sample of ``leaf_shapes[node]`` at each data node: a probe batch of 2 in evaluation mode,
        without gradients, so that no segment's state changes."""
        outs: dict[str, torch.Tensor] = {}
        with CAPTURE_LOCK, torch.no_grad():
            for node in self.plan.nodes:  # inputs come before the nodes that read them
                if node is self.plan.root:
                    continue
                module = self.modules[node.name]
                device = next(iter([*module.parameters(), *module.buffers()]), torch.empty(0)).device
                x = (torch.zeros(2, *leaf_shapes[node.name], device=device) if not node.inputs
                     else merge_inputs([outs[i].to(device) for i in node.inputs], node.merge, node.merge_dim))
                training = module.training
                try:
                    outs[node.name] = module.eval()(x)
                finally:
                    module.train(training)
        return {(name, self.plan.consumer(name).name): tuple(out.shape[1:]) for name, out in outs.items()}


def _cuts(cut: Cut) -> list:
    return list(cut) if isinstance(cut, (list, tuple)) else [cut]


def vanilla(model: nn.Module, cut: Cut, *, in_shape: Sequence[int] | None = None, task: str = "y") -> Split:
    """Client runs layers up to the cut on its data; the server runs the rest and, given the
    client's labels, the loss."""
    if len(_cuts(cut)) != 1:
        raise CutError(f"vanilla split takes exactly one cut, got {_cuts(cut)}")
    client, server = split_model(model, cut, in_shape=in_shape)
    plan = Plan((Node("client", "client"), Node("server", "server", ("client",), heads=(Head(task, "client"),))))
    return Split(plan, {"client": client, "server": server}, source=model)


def ushaped(model: nn.Module, cut: Cut, *, in_shape: Sequence[int] | None = None, task: str = "y") -> Split:
    """Client keeps the first and the last layers: labels and loss never leave it."""
    if len(_cuts(cut)) != 2:
        raise CutError(f"U-shaped split takes two cuts (head | body | tail), got {_cuts(cut)}")
    head, body, tail = split_model(model, cut, in_shape=in_shape)
    plan = Plan(
        (
            Node("client/head", "client"),
            Node("server/body", "server", ("client/head",)),
            Node("client/tail", "client", ("server/body",), heads=(Head(task, "client"),)),
        )
    )
    return Split(plan, {"client/head": head, "server/body": body, "client/tail": tail}, source=model)


def multihop(
    model: nn.Module,
    cut: Cut,
    *,
    in_shape: Sequence[int] | None = None,
    roles: Sequence[str] | None = None,
    task: str = "y",
) -> Split:
    """A chain of parties: client -> hop1 -> ... -> server, one segment each; labels shared with
    the last party as in vanilla."""
    cuts = _cuts(cut)
    if len(cuts) < 2:
        raise CutError(f"multi-hop needs at least two cuts (three parties), got {cuts}")
    roles = list(roles or ["client", *(f"hop{i}" for i in range(1, len(cuts))), "server"])
    if len(roles) != len(cuts) + 1:
        raise ValueError(f"{len(cuts)} cuts make {len(cuts) + 1} segments, but {len(roles)} roles were named")
    segments = split_model(model, cut, in_shape=in_shape)
    nodes = [Node(roles[0], roles[0])]
    for prev, role in zip(roles, roles[1:]):
        nodes.append(Node(role, role, (prev,)))
    nodes[-1] = Node(roles[-1], roles[-1], (roles[-2],), heads=(Head(task, roles[0]),))
    return Split(Plan(tuple(nodes)), dict(zip(roles, segments)), source=model)


class MultiHead(nn.Module):
    """A trunk followed by several heads; returns one output per head, in head order."""

    def __init__(self, trunk: nn.Module, heads: Mapping[str, nn.Module]) -> None:
        super().__init__()
        if len(heads) < 1:
            raise ValueError("MultiHead needs at least one head")
        self.trunk = trunk
        self.heads = nn.ModuleDict(heads)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        z = self.trunk(x)
        return tuple(h(z) for h in self.heads.values())


def multitask(
    model: MultiHead,
    cut: Cut,
    *,
    in_shape: Sequence[int] | None = None,
    weights: Mapping[str, float] | None = None,
) -> Split:
    """One trunk cut between client and server; the server holds the rest of the trunk and every
    head. Each head's labels come from the client; the loss is the weighted sum of head losses."""
    weights = dict(weights or {})
    unknown = set(weights) - set(model.heads)
    if unknown:
        raise ValueError(f"weights name unknown heads {sorted(unknown)}; heads are {list(model.heads)}")
    client, rest = split_model(model.trunk, cut, in_shape=in_shape)
    server = MultiHead(rest, model.heads)
    heads = tuple(Head(task, "client", weights.get(task, 1.0)) for task in model.heads)
    plan = Plan((Node("client", "client"), Node("server", "server", ("client",), heads=heads)))
    return Split(plan, {"client": client, "server": server}, source=model)


class Vertical(nn.Module):
    """The unsplit reference of a vertical split: cut the input into ``len(bottoms)`` contiguous
    chunks along ``dim`` (near-equal, or of ``sizes``: e.g. each site's number of columns), run
    each through its bottom, merge, run the top."""

    def __init__(self, bottoms: Sequence[nn.Module], top: nn.Module, *, dim: int = 1, merge: str = "concat", merge_dim: int = 1,
                 sizes: Sequence[int] | None = None) -> None:
        super().__init__()
        if merge not in ("concat", "sum", "mean"):
            raise ValueError(f"merge must be concat, sum or mean, got {merge!r}")
        if len(bottoms) < 2:
            raise ValueError(f"a vertical split needs at least 2 bottoms, got {len(bottoms)}")
        if sizes is not None and (len(sizes) != len(bottoms) or min(sizes) < 1):
            raise ValueError(f"sizes {list(sizes)} must give a positive width for each of the {len(bottoms)} bottoms")
        self.bottoms = nn.ModuleList(bottoms)
        self.top = top
        self.dim, self.merge, self.merge_dim = dim, merge, merge_dim
        self.sizes = None if sizes is None else tuple(int(k) for k in sizes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        parts = [b(p) for b, p in zip(self.bottoms, vertical_split(x, self.sizes or len(self.bottoms), dim=self.dim))]
        return self.top(merge_inputs(parts, self.merge, self.merge_dim))


def vertical(
    model: Vertical,
    *,
    in_shape: Sequence[int] | None = None,
    label_role: str = "server",
    task: str = "y",
) -> Split:
    """Clients hold different features of the same samples; the server merges their outputs.

    Client ``i`` owns ``model.bottoms[i]`` and the ``i``-th feature chunk; labels stay with
    ``label_role`` (the server by default).
    """
    roles = [f"client{i}" for i in range(len(model.bottoms))]
    nodes = [Node(r, r) for r in roles]
    nodes.append(Node("server", "server", tuple(roles), merge=model.merge, merge_dim=model.merge_dim, heads=(Head(task, label_role),)))
    if in_shape is not None:
        probe = torch.zeros(2, *in_shape)
        chunk_shapes = [p.shape[1:] for p in vertical_split(probe, model.sizes or len(roles), dim=model.dim)]
        outs = [check_segments([b], s)[0] for b, s in zip(model.bottoms, chunk_shapes)]
        try:
            merged = merge_inputs([torch.zeros(o) for o in outs], model.merge, model.merge_dim)
        except RuntimeError as exc:
            raise CutError(f"vertical bottoms' outputs {[tuple(o) for o in outs]} cannot be merged by {model.merge}: {exc}") from None
        check_segments([model.top], merged.shape[1:], cut_names=["merge"])
    modules = {r: b for r, b in zip(roles, model.bottoms)}
    modules["server"] = model.top
    return Split(Plan(tuple(nodes)), modules, feature_dim=model.dim, feature_sizes=model.sizes, source=model)


CONFIGURATIONS = OrderedDict(
    vanilla=vanilla, ushaped=ushaped, vertical=vertical, multihop=multihop, multitask=multitask
)
