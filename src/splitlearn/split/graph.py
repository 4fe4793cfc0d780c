"""Cutting any ``nn.Module`` after named submodules, on the graph PyTorch captures of it.

``torch.fx.symbolic_trace`` captures the forward once (and once more in eval mode, to prove it
runs the same code in both); where it cannot (Python control flow on shapes, a branch on
``self.training``), ``torch.export`` captures it with a dynamic batch dimension, once per mode.
Every node of a graph carries the stack of modules it ran inside; a cut named ``"layer2"`` falls
right after the last node inside ``layer2``. Each piece is an ``fx.GraphModule`` over the nodes
between two cuts: it holds the very submodules, parameters and buffers of the model that those
nodes use, under the model's own qualified names, so the pieces chained together compute exactly
what the model computes.
"""

from __future__ import annotations

import difflib
import operator
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import fx, nn

__all__ = ["CutError", "GraphCut", "ModePiece", "capture", "cut_graph", "export", "trace"]


class CutError(ValueError):
    """A cut does not name a valid place in the model, or the pieces do not fit together."""


def _first_line(exc: BaseException, limit: int = 200) -> str:
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= limit else text[: limit - 3] + "..."


CAPTURE_LOCK = threading.RLock()
"""Held while torch.fx traces a model, and while a split is probed with a forward: tracing patches
``nn.Module.__call__`` for every thread, so a forward on another thread meanwhile would be traced
too (and fail). Parties of one process on several threads build one at a time."""


class _Untraceable(Exception):
    """torch.fx cannot capture the forward (the reason is the message)."""


def trace(model: nn.Module) -> fx.GraphModule:
    """Capture ``model.forward`` with ``torch.fx.symbolic_trace``: one graph, exact in train and
    eval mode and at any batch size. ``_Untraceable`` (saying why) for a forward with Python
    control flow on tensors, or one that runs different code in train and eval mode."""
    mode = model.training
    code = {}
    try:
        for train in (True, False):
            model.train(train)
            with CAPTURE_LOCK:
                code[train] = fx.symbolic_trace(model)
    except Exception as exc:  # fx raises TraceError, TypeError, RuntimeError... from the user's code
        raise _Untraceable(
            f"torch.fx cannot trace its forward ({_first_line(exc)}); this usually means Python control flow "
            "on tensor values (an `if` or loop over a tensor)"
        ) from None
    finally:
        model.train(mode)
    if code[True].code != code[False].code:
        raise _Untraceable("its forward runs different code in train and eval mode (it branches on self.training)")
    return code[True]


def export(model: nn.Module, in_shape: Sequence[int]) -> dict[bool, fx.GraphModule]:
    """Capture ``model`` with ``torch.export`` (batch dimension dynamic), once in train mode and
    once in eval mode: the graphs hold the mode's behaviour (BatchNorm statistics, dropout)."""
    param = next(model.parameters(), None)
    x = torch.zeros(2, *in_shape, device=param.device if param is not None else "cpu",
                    dtype=param.dtype if param is not None and param.is_floating_point() else None)
    mode = model.training
    graphs = {}
    try:
        for train in (True, False):
            model.train(train)
            program = torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},), strict=False)
            graphs[train] = program.module()
    except Exception as exc:  # export raises many kinds (UserError, GuardOnDataDependentSymNode, ...)
        raise _Untraceable(f"torch.export cannot capture it either ({_first_line(exc)})") from None
    finally:
        model.train(mode)
    return graphs


def capture(model: nn.Module, in_shape: Sequence[int] | None) -> dict[bool, fx.GraphModule]:
    """The model's graph per mode: ``torch.fx`` where it captures the forward exactly (one graph
    for both modes), else ``torch.export`` on a sample of ``in_shape``. One-line ``CutError``
    saying why and what to do where neither can."""
    kind = type(model).__name__
    try:
        gm = trace(model)
        return {True: gm, False: gm}
    except _Untraceable as fx_failure:
        if in_shape is None:
            raise CutError(f"cannot cut {kind}: {fx_failure}; give in_shape so torch.export can try, move that part "
                           "into a submodule and cut before or after it, or pass an nn.Sequential") from None
        try:
            return export(model, in_shape)
        except _Untraceable as export_failure:
            raise CutError(f"cannot cut {kind}: {fx_failure}, and {export_failure}. Move that part into a submodule "
                           "and cut before or after it, or pass an nn.Sequential") from None


def _stack(node: fx.Node) -> list[str]:
    """Qualified names of the modules ``node`` ran inside, outermost first."""
    stack = node.meta.get("nn_module_stack") or {}
    paths = [v[0] if isinstance(v, tuple) else str(v) for v in stack.values()]
    if node.op == "call_module" and node.target not in paths:
        paths.append(str(node.target))
    return [p for p in paths if p]


def _inside(node: fx.Node, name: str) -> bool:
    return any(p == name or p.startswith(name + ".") for p in _stack(node))


def _batch_size(node: fx.Node) -> fx.Node | None:
    """The tensor whose batch size ``node`` is (``t.size(0)``, ``t.shape[0]``), else None."""
    if node.op == "call_method" and node.target == "size" and len(node.args) == 2 and node.args[1] == 0:
        return node.args[0]
    if node.op == "call_function" and node.target is torch.ops.aten.sym_size.int and node.args[1:] == (0,):
        return node.args[0]
    if node.op == "call_function" and node.target is operator.getitem and len(node.args) == 2 and node.args[1] == 0:
        src = node.args[0]
        if isinstance(src, fx.Node) and (
            (src.op == "call_function" and src.target is getattr and src.args[1:] == ("shape",))
            or (src.op == "call_method" and src.target == "size" and len(src.args) == 1)
        ):
            return src.args[0]
    return None


def _describe(node: fx.Node) -> str:
    stack = _stack(node)
    if node.op == "placeholder":
        return f"the model's input {node.name!r}"
    return f"{node.name!r} (made in {stack[-1]!r})" if stack else repr(node.name)


@dataclass
class GraphCut:
    """The pieces of a traced model and, per cut, the graph value that crosses it."""

    pieces: list[nn.Module]  # fx.GraphModule, or ModePiece where torch.export captured the model
    crossing: list[str]


def _has_attr(module: nn.Module, target: str) -> bool:
    try:
        operator.attrgetter(target)(module)
    except AttributeError:
        return False
    return True


class ModePiece(nn.Module):
    """A piece of a model captured by ``torch.export``, which records one mode per graph: the
    train-mode graph owns the parameters and buffers, and the eval-mode graph's code runs on them."""

    def __init__(self, train: fx.GraphModule, eval_: fx.GraphModule) -> None:
        super().__init__()
        self.graph = train
        for n in eval_.graph.nodes:  # what only the eval graph reads (a constant) joins the train graph's module
            if n.op == "get_attr" and not _has_attr(train, n.target):
                *path, leaf = n.target.split(".")
                owner = train
                for part in path:
                    if not hasattr(owner, part):
                        owner.add_module(part, nn.Module())
                    owner = getattr(owner, part)
                value = operator.attrgetter(n.target)(eval_)
                if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
                    owner.register_buffer(leaf, value)
                else:
                    setattr(owner, leaf, value)
        object.__setattr__(self, "_eval_forward", type(eval_).forward)  # not a submodule: no second copy of the weights

    def forward(self, x):
        return self.graph(x) if self.training else self._eval_forward(self.graph, x)


def cut_graph(model: nn.Module, cuts: Sequence[str], *, in_shape: Sequence[int] | None = None) -> GraphCut:
    """Cut ``model`` after each named submodule in ``cuts`` (in forward order)."""
    kind = type(model).__name__
    for c in cuts:
        if isinstance(c, bool) or not isinstance(c, str):
            raise CutError(
                f"cut {c!r} must be a module name of {kind} (as in model.named_modules()); "
                "layer indices cut nn.Sequential models only"
            )
    graphs = capture(model, in_shape)
    train = _cut_one(graphs[True], model, cuts)
    if graphs[False] is graphs[True]:
        return train
    evaluate = _cut_one(graphs[False], model, cuts)
    pieces = [ModePiece(t, e) for t, e in zip(train.pieces, evaluate.pieces)]
    _check_owned(pieces, model, cuts)
    return GraphCut(pieces, train.crossing)


def _cut_one(gm: fx.GraphModule, model: nn.Module, cuts: Sequence[str]) -> GraphCut:
    kind = type(model).__name__
    names = [n for n, _ in model.named_modules() if n]
    graph = gm.graph
    inputs = [n for n in graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise CutError(f"cannot cut {kind}: its forward takes {len(inputs)} inputs; a split model takes one tensor")
    # torch.export adds a call checking the input's shape; each piece checks its own input instead
    body = [n for n in graph.nodes if n.op not in ("placeholder", "output", "get_attr")
            and not (n.op == "call_module" and str(n.target).startswith("_guards"))]
    index = {n: i for i, n in enumerate(body)}
    index[inputs[0]] = -1
    output = next(n for n in graph.nodes if n.op == "output")
    index[output] = len(body)
    result = output.args[0]
    if isinstance(result, (tuple, list)) and len(result) == 1 and type(graph._codegen) is not fx.graph.CodeGen:
        result = result[0]  # torch.export's flat outputs: the model's one tensor

    def boundary(name: str) -> int:
        inside = [i for i, n in enumerate(body) if _inside(n, name)]
        if not inside:
            if name not in names:
                near = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
                hint = f"; close names: {', '.join(near)}" if near else f"; top-level modules: {', '.join(n for n in names if '.' not in n)}"
                raise CutError(f"cut {name!r} names no module of {kind}{hint}")
            raise CutError(f"cut {name!r}: module {name!r} of {kind} never runs in its forward")
        return inside[-1] + 1

    bounds = [boundary(c) for c in cuts]
    if bounds != sorted(set(bounds)):
        raise CutError(f"cuts {list(cuts)} must be distinct and in forward order")
    if bounds[-1] >= len(body):
        raise CutError(f"cut {cuts[-1]!r} is the end of {kind}: nothing would run after it")

    def crossing(b: int) -> tuple[list[fx.Node], list[fx.Node]]:
        """Values made before boundary ``b`` and used after it: (tensors, batch sizes)."""
        tensors, sizes = [], []
        for v in (inputs[0], *body[:b]):
            if any(index.get(u, -2) >= b for u in v.users if u.op != "get_attr"):
                (sizes if _batch_size(v) is not None else tensors).append(v)
        return tensors, sizes

    pieces, crossed = [], []
    starts = [0, *bounds]
    ends = [*bounds, len(body)]
    entering: fx.Node = inputs[0]
    entering_sizes: list[fx.Node] = []
    for k, (a, b) in enumerate(zip(starts, ends)):
        last = k == len(starts) - 1
        if not last:
            tensors, sizes = crossing(b)
            if len(tensors) != 1:
                raise CutError(_many_crossing(kind, cuts[k], tensors, names, body, crossing, b))
            leaving = tensors[0]
        pieces.append(_piece(gm, body[a:b], entering, entering_sizes, result if last else leaving, f"{kind}Piece{k}"))
        if not last:
            crossed.append(leaving.name)
            entering, entering_sizes = leaving, sizes
    _check_owned(pieces, model, cuts)
    return GraphCut(pieces, crossed)


def _many_crossing(kind, cut, tensors, names, body, crossing, b) -> str:
    what = ", ".join(_describe(t) for t in tensors) if tensors else "nothing"
    singles = []
    for name in names:
        inside = [i for i, n in enumerate(body) if _inside(n, name)]
        if inside and 0 < inside[-1] + 1 < len(body) and len(crossing(inside[-1] + 1)[0]) == 1:
            singles.append((abs(inside[-1] + 1 - b), inside[-1] + 1, name))
    best: dict[int, str] = {}
    for _, pos, name in sorted(singles, key=lambda t: (t[0], t[2].count("."))):
        best.setdefault(pos, name)  # the outermost module ending at that place
    before = [best[p] for p in sorted(best, reverse=True) if p < b][:1]
    after = [best[p] for p in sorted(best) if p > b][:1]
    near = before + after
    hint = f"; the nearest cuts where one tensor crosses, before and after it: {', '.join(map(repr, near))}" if near else ""
    return (f"cut {cut!r} of {kind}: {len(tensors)} tensors cross it ({what}), but one activation "
            f"message carries one tensor (a skip connection runs over this cut){hint}")


def _piece(gm: fx.GraphModule, nodes: list[fx.Node], entering: fx.Node, sizes: list[fx.Node], out: Any, name: str) -> fx.GraphModule:
    g = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    if entering.op == "placeholder":
        env[entering] = g.node_copy(entering)
    else:
        env[entering] = g.placeholder(entering.name)
    for s in sizes:  # a batch size the earlier piece read: re-derived from this piece's own input
        env[s] = g.call_method("size", (env[entering], 0))

    def arg(n: fx.Node) -> fx.Node:
        if n not in env:
            if n.op != "get_attr":
                raise CutError(f"internal: piece {name} uses {n.name!r} made outside it")
            env[n] = g.node_copy(n)
        return env[n]

    for n in nodes:
        env[n] = g.node_copy(n, arg)
    g.output(fx.map_arg(out, arg))
    g.lint()
    return fx.GraphModule(gm, g, class_name=name)


def _check_owned(pieces: list[fx.GraphModule], model: nn.Module, cuts: Sequence[str]) -> None:
    """Each parameter and buffer must live in one piece: a party cannot train a weight it shares."""
    names = {id(t): k for k, t in [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]}
    owner: dict[int, int] = {}
    for k, piece in enumerate(pieces):
        for t in [*piece.parameters(), *piece.buffers()]:
            j = owner.setdefault(id(t), k)
            if j != k:
                raise CutError(
                    f"{names.get(id(t), 'a tensor')!r} of {type(model).__name__} is used both before and after "
                    f"cut {cuts[j]!r} (pieces {j} and {k}); each weight must live with one party: cut elsewhere "
                    "or give each side its own copy"
                )
