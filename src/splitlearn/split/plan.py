"""The plan: which party owns which segment, and how segment outputs flow.

A plan is a tree of nodes. Each node is one segment owned by one role (a party, or a group of
round-robin clients that take turns playing it). A node reads its role's local features (a leaf)
or merges the outputs of its input nodes; exactly one node, the root, ends in loss heads. The
same plan drives every configuration: vanilla, U-shaped, vertical, multi-hop and multi-task are
only different trees.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch

__all__ = ["Head", "Node", "Plan", "merge_inputs"]

Merge = Literal["concat", "sum", "mean"]
LOSSES = ("cross_entropy",)


def merge_inputs(parts: list[torch.Tensor], how: Merge, dim: int) -> torch.Tensor:
    """Merge the outputs of several nodes: concatenate along ``dim``, or sum / average them."""
    if len(parts) == 1:
        return parts[0]
    if how == "concat":
        return torch.cat(parts, dim=dim)
    stacked = torch.stack(parts)
    return stacked.sum(0) if how == "sum" else stacked.mean(0)


@dataclass(frozen=True)
class Head:
    """One task at the root node: its labels live with ``label_role``; weight scales its loss."""

    task: str
    label_role: str
    weight: float = 1.0
    loss: str = "cross_entropy"

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ValueError(f"head {self.task!r}: unknown loss {self.loss!r}; known: {', '.join(LOSSES)}")
        if not self.weight >= 0:
            raise ValueError(f"head {self.task!r}: weight must be >= 0, got {self.weight}")


@dataclass(frozen=True)
class Node:
    """A segment owned by ``role``; ``inputs`` names upstream nodes, empty for local features."""

    name: str
    role: str
    inputs: tuple[str, ...] = ()
    merge: Merge = "concat"
    merge_dim: int = 1
    heads: tuple[Head, ...] = ()

    def __post_init__(self) -> None:
        if self.merge not in ("concat", "sum", "mean"):
            raise ValueError(f"node {self.name!r}: merge must be concat, sum or mean, got {self.merge!r}")


@dataclass(frozen=True)
class Plan:
    nodes: tuple[Node, ...]
    coordinator: str = "coordinator"

    def __post_init__(self) -> None:
        names = [n.name for n in self.nodes]
        if len(set(names)) != len(names):
            raise ValueError(f"plan has duplicate node names: {names}")
        known: set[str] = set()
        for node in self.nodes:
            missing = [i for i in node.inputs if i not in known]
            if missing:
                raise ValueError(f"node {node.name!r} reads {missing}, which are not defined before it")
            known.add(node.name)
        consumed = [i for n in self.nodes for i in n.inputs]
        if len(set(consumed)) != len(consumed):
            raise ValueError("each node's output may feed only one other node")
        roots = [n.name for n in self.nodes if n.name not in consumed]
        if len(roots) != 1:
            raise ValueError(f"plan must end in exactly one root node, found {roots}")
        if not self.root.heads:
            raise ValueError(f"root node {self.root.name!r} has no loss heads")
        if any(n.heads for n in self.nodes if n is not self.root):
            raise ValueError("only the root node may carry loss heads")
        if self.coordinator in self.roles:
            raise ValueError(f"coordinator name {self.coordinator!r} clashes with a role")

    @cached_property
    def root(self) -> Node:
        consumed = {i for n in self.nodes for i in n.inputs}
        return next(n for n in self.nodes if n.name not in consumed)

    @cached_property
    def _by_name(self) -> dict[str, Node]:
        return {n.name: n for n in self.nodes}

    @cached_property
    def _consumers(self) -> dict[str, Node]:
        return {i: n for n in self.nodes for i in n.inputs}

    def node(self, name: str) -> Node:
        return self._by_name[name]

    def consumer(self, name: str) -> Node | None:
        return self._consumers.get(name)

    @cached_property
    def roles(self) -> tuple[str, ...]:
        """Every role taking part in a step: node owners and label owners, in plan order."""
        seen = [n.role for n in self.nodes] + [h.label_role for h in self.root.heads]
        return tuple(dict.fromkeys(seen))

    @cached_property
    def data_roles(self) -> tuple[str, ...]:
        """Roles that start a step from their local features."""
        return tuple(dict.fromkeys(n.role for n in self.nodes if not n.inputs))

    @cached_property
    def relay_role(self) -> str | None:
        """The role that passes round-robin weights on when they go "via the server": the root's
        role, unless a client holds the root (U-shaped), then the last role holding no data."""
        if self.root.role not in self.data_roles:
            return self.root.role
        others = [r for r in self.roles if r not in self.data_roles]
        return others[-1] if others else None

    @cached_property
    def start_roles(self) -> tuple[str, ...]:
        """Roles the coordinator starts each step at: data roles and label owners."""
        return tuple(dict.fromkeys([*self.data_roles, *(h.label_role for h in self.root.heads)]))

    def nodes_of(self, role: str) -> tuple[Node, ...]:
        return tuple(n for n in self.nodes if n.role == role)
