"""Cutting a model into segments: ``nn.Sequential`` models by their layer list, any other
``nn.Module`` on its ``torch.fx`` graph; with checks at build time."""

from __future__ import annotations

import difflib
from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import fx, nn

from splitlearn.models.layers import flatten_layers
from splitlearn.split.graph import CutError, cut_graph

__all__ = ["CutError", "check_equivalence", "check_segments", "is_plain_sequential", "resolve_cuts", "split_model", "writes_in_place"]


def is_plain_sequential(model: nn.Module) -> bool:
    """True when ``model`` is an ``nn.Sequential`` whose nested ``nn.Sequential`` containers all
    keep ``Sequential.forward``: running its flattened layers in order is the model."""
    if not isinstance(model, nn.Sequential):
        return False
    return all(type(m).forward is nn.Sequential.forward for m in model.modules() if isinstance(m, nn.Sequential))


def resolve_cuts(model: nn.Module, cut: int | str | Sequence[int | str]) -> list[int]:
    """Turn cuts into boundaries in the model's flattened layer list.

    An integer ``k`` keeps the first ``k`` layers before the cut. A name (``"features.4"``, or a
    container such as ``"layer2"``) cuts right after that layer, which becomes the cut layer.

    >>> m = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    >>> resolve_cuts(m, 2), resolve_cuts(m, ["0"])
    ([2], [1])
    """
    layers = flatten_layers(model)
    names = [name for name, _ in layers]
    cuts = list(cut) if isinstance(cut, (list, tuple)) else [cut]
    if not cuts:
        raise CutError("no cut given: name at least one layer or index to cut after")
    bounds = []
    for c in cuts:
        if isinstance(c, bool) or not isinstance(c, (int, str)):
            raise CutError(f"cut {c!r} must be a layer index (int) or a layer name (str)")
        if isinstance(c, int):
            b = c
        else:
            matches = [i for i, n in enumerate(names) if n == c or n.startswith(c + ".")]
            if not matches:
                near = difflib.get_close_matches(c, names, n=5, cutoff=0.5)
                raise CutError(f"cut {c!r} names no layer; {'close names: ' + ', '.join(near) if near else 'layers are: ' + ', '.join(names)}")
            b = matches[-1] + 1
        if not 0 < b < len(names):
            raise CutError(
                f"cut {c!r} is out of range: the model has {len(names)} layers, so a cut must keep "
                f"between 1 and {len(names) - 1} layers before it"
            )
        bounds.append(b)
    if bounds != sorted(set(bounds)):
        raise CutError(f"cuts {cuts} must be distinct and in increasing order (boundaries {bounds})")
    return bounds


def writes_in_place(module: nn.Module) -> bool:
    """True when ``module`` may write into a tensor in place: a submodule built with
    ``inplace=True``, or (for a graph piece) an in-place call such as ``x.relu_()`` or
    ``F.relu(x, inplace=True)``. A party gives such a segment a copy of the leaf it received."""
    for m in module.modules():
        if getattr(m, "inplace", False) is True:
            return True
        graph = getattr(m, "graph", None)
        if isinstance(m, fx.GraphModule) and graph is not None:
            for n in graph.nodes:
                if n.kwargs.get("inplace") is True:
                    return True
                if isinstance(n.target, torch._ops.OpOverload) and n.target._schema.is_mutable:
                    return True  # an aten op of a torch.export graph that writes into an argument
                name = n.target if isinstance(n.target, str) else getattr(n.target, "__name__", "")
                if n.op in ("call_method", "call_function") and name.endswith("_") and not name.endswith("__"):
                    return True
    return False


def split_model(
    model: nn.Module,
    cut: int | str | Sequence[int | str],
    *,
    in_shape: Sequence[int] | None = None,
) -> list[nn.Module]:
    """Cut ``model`` into ``len(cuts) + 1`` segments that share its parameters.

    A plain ``nn.Sequential`` is cut in its flattened layer list (by index or layer name). Any
    other module is cut by qualified module name (``"features.denseblock2"``, ``"layer2.1"``) on
    its ``torch.fx`` graph; with ``in_shape`` (one sample's shape) the pieces are then run forward
    and backward against the model on a small batch, and a split that differs is refused. With
    ``in_shape``, a Sequential's segments are run on a probe batch and a failure names the layer.
    """
    if is_plain_sequential(model):
        layers = flatten_layers(model)
        bounds = [0, *resolve_cuts(model, cut), len(layers)]
        segments = [
            nn.Sequential(OrderedDict((n.replace(".", "_"), m) for n, m in layers[a:b]))
            for a, b in zip(bounds, bounds[1:])
        ]
        if in_shape is not None:
            check_segments(segments, in_shape, cut_names=[layers[b - 1][0] for b in bounds[1:-1]],
                           names={id(m): n for n, m in model.named_modules()})
        return segments
    cuts = list(cut) if isinstance(cut, (list, tuple)) else [cut]
    if not cuts:
        raise CutError("no cut given: name at least one module to cut after")
    pieces = cut_graph(model, cuts, in_shape=in_shape).pieces
    if in_shape is not None:
        check_equivalence(model, pieces, in_shape)
    return pieces


def _expects(layer: nn.Module) -> str:
    if isinstance(layer, nn.Linear):
        return f"(batch, ..., {layer.in_features})"
    if isinstance(layer, nn.modules.conv._ConvNd):
        return f"(batch, {layer.in_channels}, ...)"
    if isinstance(layer, nn.modules.batchnorm._BatchNorm):
        return f"(batch, {layer.num_features}, ...)"
    return f"what {type(layer).__name__} takes"


def _shape(x) -> str:
    return str(tuple(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


class _Tracker:
    """Forward pre-hooks on the leaf modules of a segment: which layer was running, on what."""

    def __init__(self, segment: nn.Module, names: dict[int, str]) -> None:
        self.entered: list[tuple[str, nn.Module, str]] = []
        self.handles = []
        for local, m in segment.named_modules():
            if next(m.children(), None) is None:
                name = names.get(id(m), local)
                self.handles.append(m.register_forward_pre_hook(
                    lambda mod, args, name=name: self.entered.append((name, mod, ", ".join(_shape(a) for a in args)))))

    def close(self) -> None:
        for h in self.handles:
            h.remove()


def check_segments(
    segments: Sequence[nn.Module],
    in_shape: Sequence[int],
    *,
    cut_names: Sequence[str] | None = None,
    names: dict[int, str] | None = None,
) -> list[torch.Size]:
    """Run a probe batch of 2 through the segments in order; return each segment's output shape.

    A failure in the first layer after a cut is a misfit at that cut (named, with the shape
    produced before it and the shape expected after); a failure deeper in a segment names the
    layer that failed and the input shape it got. ``names`` maps ``id(layer)`` to the name the
    user knows it by.
    """
    cut_names = list(cut_names or [f"#{i + 1}" for i in range(len(segments) - 1)])
    names = names or {}
    first = next((p for s in segments for p in s.parameters()), None)
    x = torch.zeros(2, *in_shape, device=first.device if first is not None else "cpu")
    shapes = []
    modes = [s.training for s in segments]
    try:
        with torch.no_grad():
            for i, seg in enumerate(segments):
                seg.eval()
                tracker = _Tracker(seg, names)
                try:
                    x = seg(x)
                except (RuntimeError, ValueError, TypeError, IndexError) as exc:
                    raise _misfit(i, x, in_shape, tracker.entered, cut_names, exc) from None
                finally:
                    tracker.close()
                shapes.append(x.shape)
    finally:
        for seg, mode in zip(segments, modes):
            seg.train(mode)
    return shapes


def _misfit(i: int, x, in_shape, entered, cut_names, exc: BaseException) -> CutError:
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    if len(entered) > 1 or not entered:
        if entered:
            name, layer, got = entered[-1]
            return CutError(f"layer {name!r} ({type(layer).__name__}) in segment {i} failed on input of shape {got}: {reason}")
        return CutError(f"segment {i} failed on input of shape {_shape(x)}: {reason}")
    if i == 0:
        return CutError(f"the first segment cannot take inputs of shape {_shape(x)} (sample shape {tuple(in_shape)}): {reason}")
    layer = entered[0][1]
    return CutError(
        f"segments do not fit at cut {cut_names[i - 1]!r}: the segment before it produces shape {_shape(x)}, "
        f"but the segment after it starts with {layer} and expects {_expects(layer)}"
    )


def _flat(out) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    return [t for o in out for t in _flat(o)] if isinstance(out, (list, tuple)) else []


def check_equivalence(model: nn.Module, pieces: Sequence[nn.Module], in_shape: Sequence[int], *, batch: int = 3, seed: int = 0) -> None:
    """Run one forward and backward of ``pieces`` chained as the parties chain them (each piece
    gets a detached copy of the one before) against ``model``, in train mode from the same random
    state, then one eval forward; refuse (``CutError`` naming the piece) a split whose outputs or
    gradients differ. Buffers (BatchNorm statistics), ``.grad`` and train/eval modes are left as
    they were."""
    kind = type(model).__name__
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.get_default_dtype()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *in_shape, generator=g, dtype=dtype).to(device)
    buffers = [(b, b.detach().clone()) for b in model.buffers()]
    modes = [(m, m.training) for m in [*model.modules(), *(m for p in pieces for m in p.modules())]]
    rng_devices = [device.index or 0] if device.type == "cuda" else []

    def restore() -> None:
        for b, saved in buffers:
            b.data.copy_(saved)

    def run(fn):
        with torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(seed)
            try:
                return fn()
            finally:
                restore()

    def reference():
        model.train()
        tracker = _Tracker(model, {})
        try:
            raw = model(x)
        except Exception as exc:
            where = f" in layer {tracker.entered[-1][0]!r} ({type(tracker.entered[-1][1]).__name__})" if tracker.entered else ""
            raise CutError(f"{kind} cannot take inputs of shape {tuple(x.shape)} (sample shape {tuple(in_shape)}): "
                           f"{(str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}{where}") from None
        finally:
            tracker.close()
        if not isinstance(raw, torch.Tensor):
            raise CutError(f"{kind}'s forward returns {type(raw).__name__}, not a tensor: the last party scores one "
                           "tensor of outputs, so wrap the model to return it (e.g. the logits)")
        out = [raw]
        weights = [torch.randn(o.shape, generator=g.manual_seed(seed + 1 + i), dtype=o.dtype).to(o.device) for i, o in enumerate(out)]
        loss = sum((o * w).sum() for o, w in zip(out, weights) if o.is_floating_point())
        params = [p for p in model.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        return [o.detach() for o in out], weights, dict(zip(map(id, params), grads))

    def chained(weights):
        for p in pieces:
            p.train()
        h, ins, outs = x, [], []
        for k, p in enumerate(pieces):
            if k:
                h = h.detach().requires_grad_(True)
                ins.append(h)
                h = h.clone()
            h = p(h)
            outs.append(h)
        final = _flat(outs[-1])
        grads: dict[int, torch.Tensor | None] = {}
        upstream = [(o * w).sum() for o, w in zip(final, weights) if o.is_floating_point()]
        carried = None  # the gradient at piece k's output, from piece k + 1
        for k in range(len(pieces) - 1, -1, -1):
            params = [p for p in pieces[k].parameters() if p.requires_grad]
            wrt = params + ([ins[k - 1]] if k else [])
            if k == len(pieces) - 1:
                got = torch.autograd.grad(sum(upstream), wrt, allow_unused=True)
            else:
                got = torch.autograd.grad(outs[k], wrt, grad_outputs=carried, allow_unused=True)
            grads.update(zip(map(id, params), got[: len(params)]))
            carried = got[-1] if k else None
        return [o.detach() for o in final], grads

    try:
        ref_out, weights, ref_grads = run(reference)
        out, grads = run(lambda: chained(weights))
        _compare("train-mode output", kind, ref_out, out, len(pieces) - 1)
        names = {id(p): n for n, p in model.named_parameters()}
        for k, piece in enumerate(pieces):
            for p in piece.parameters():
                a, b = ref_grads.get(id(p)), grads.get(id(p))
                if (a is None) != (b is None) or (a is not None and not _close(a, b)):
                    raise CutError(f"the split of {kind} is not exact: piece {k} gets a different gradient for "
                                   f"{names.get(id(p), 'a parameter')!r} than the model does")
        with torch.no_grad():
            model.eval()
            ref_eval = run(lambda: _flat(model(x)))
            for p in pieces:
                p.eval()
            def chain_eval():
                h = x
                for p in pieces:
                    h = p(h)
                return _flat(h)
            _compare("eval-mode output", kind, ref_eval, run(chain_eval), len(pieces) - 1)
    finally:
        for m, mode in modes:
            m.training = mode


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    scale = float(a.abs().max()) if a.numel() else 0.0
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-4, atol=1e-6 * max(1.0, scale))


def _compare(what: str, kind: str, ref: list[torch.Tensor], got: list[torch.Tensor], last: int) -> None:
    if len(ref) != len(got) or not all(_close(a, b) for a, b in zip(ref, got)):
        raise CutError(f"the split of {kind} is not exact: the {what} of its last piece ({last}) differs from the model's")
