"""The party itself: setup, message dispatch, the forward pass, the loss and the backward pass of
each step, and its scores."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager, nullcontext
from typing import NoReturn

import torch
import torch.nn.functional as F
from torch import nn

from splitlearn.split.compression import decompress
from splitlearn.split.messages import (
    Abort,
    Activation,
    Gradient,
    Labels,
    Manifest,
    Message,
    NonFinite,
    Output,
    ProtocolError,
    RelayRequest,
    ScoreRequest,
    Scores,
    StartStep,
    StepDone,
    Weights,
)
from splitlearn.split.party.checks import MessageChecks, all_finite, gradient_bound, magnitude, mark_finite, state_finite
from splitlearn.split.party.data import CheckpointStore, EvalTotals, Penalty, Shard, StepState
from splitlearn.split.party.recovery import Recovery
from splitlearn.split.plan import Head, Node, Plan, merge_inputs
from splitlearn.split.segments import writes_in_place
from splitlearn.split.state import OptimizerSpec

__all__ = ["Party"]


class Party(MessageChecks, Recovery):
    """One site. ``modules`` maps each node this role owns to its segment (``None`` until relayed).

    ``make_modules`` builds empty segments of the right architecture, for a round-robin client
    that receives weights from its predecessor. ``shards`` maps split name to local data.
    ``penalties`` adds local loss terms to data nodes (computed and back-propagated here only,
    e.g. NoPeek); ``releases`` maps a data node to what its output becomes before it is used or
    sent, in training and evaluation alike (e.g. :class:`~splitlearn.privacy.GaussianRelease`); ``compute(phase, node, batch_size)`` wraps every forward and backward
    computation in a context manager (e.g. a FLOP counter); ``outbox`` may replace each message this party sends
    (e.g. a defence perturbing the gradients it returns, or a codec for smashed data), and
    ``inbox`` each message it receives, once checked and decoded, before it acts on it (e.g. noise
    on the smashed data it is given); either may be a :class:`~splitlearn.split.hooks.Chain`. An
    ``inbox`` hook keeps the message's kind and header (sender, receiver, step).

    A label owner that runs elsewhere than the coordinator reports its evaluation totals over each
    pass when asked (:class:`~splitlearn.split.messages.ScoreRequest`), if ``share_scores``; by
    default it does when it sends its labels away for training anyway, and not when they never
    leave it (U-shaped).

    With ``checkpoints`` set, the party saves its segments and optimiser state after each step
    the coordinator marks for a checkpoint (before it says it has finished), and an :class:`~splitlearn.split.messages.Abort` rolls it
    back to the newest of them at or before the step every party finished; see :meth:`resume`.
    """

    def __init__(
        self,
        name: str,
        *,
        role: str,
        plan: Plan,
        optimizer: OptimizerSpec,
        modules: Mapping[str, nn.Module] | None = None,
        make_modules: Callable[[], dict[str, nn.Module]] | None = None,
        shards: Mapping[str, Shard] | None = None,
        device: str | torch.device = "cpu",
        keep_predictions: bool = False,
        penalties: Mapping[str, Penalty] | None = None,
        releases: Mapping[str, Callable[[torch.Tensor], torch.Tensor]] | None = None,
        compute: Callable[[str, str, int], AbstractContextManager] | None = None,
        outbox: Callable[[Message], Message] | None = None,
        inbox: Callable[[Message], Message] | None = None,
        checkpoints: CheckpointStore | None = None,
        share_scores: bool | None = None,
        edges: Mapping[tuple[str, str], tuple[int, ...]] | None = None,
    ) -> None:
        self.name, self.role, self.plan = name, role, plan
        self.device = torch.device(device)
        self.nodes = {n.name: n for n in plan.nodes_of(role)}
        self.shards = dict(shards or {})
        self.optimizer_spec = optimizer
        self.make_modules = make_modules
        self.modules: dict[str, nn.Module] | None = None
        self._copy_input: set[str] = set()  # nodes whose segment may write in place: fed a copy
        self.optimizer: torch.optim.Optimizer | None = None
        if modules is not None:
            self._install(dict(modules))
        self.send: Callable[[Message], None] | None = None
        self.keep_predictions = keep_predictions
        unknown = set(penalties or {}) - {n for n, node in self.nodes.items() if not node.inputs}
        if unknown:
            raise ValueError(f"penalties may only attach to {self.name}'s data nodes, not {sorted(unknown)}")
        self.penalties = dict(penalties or {})
        unknown = set(releases or {}) - {n for n, node in self.nodes.items() if not node.inputs}
        if unknown:
            raise ValueError(f"releases may only attach to {self.name}'s data nodes, not {sorted(unknown)}")
        self.releases = dict(releases or {})
        self.penalty_log: list[tuple[int, str, float]] = []  # (step, node, value) of local penalties
        self.compute = compute or (lambda phase, node, batch: nullcontext())
        self.outbox, self.inbox = outbox, inbox
        self.losses: list[tuple[int, float]] = []  # (step, loss) for heads computed here
        self.eval_totals: dict[str, dict[str, EvalTotals]] = {}  # split -> task -> totals
        self.predictions: dict[str, list[tuple[torch.Tensor, torch.Tensor]]] = {}
        self._st: StepState | None = None
        self._next: StartStep | None = None  # the coordinator's next step, begun once this one is finished
        self._edges: dict[tuple[str, str], tuple[tuple[int, ...], torch.dtype]] = {}  # per-sample shape, dtype
        self._shapes = {k: tuple(v) for k, v in (edges or {}).items() if k[1] in self.nodes}  # as the split's probe found them
        self.checkpoints = checkpoints
        sends_labels = plan.root.role != role and any(h.label_role == role for h in plan.root.heads)
        self.share_scores = sends_labels if share_scores is None else share_scores
        self.floor = 0  # messages of earlier steps belong to an aborted attempt and are dropped
        self.fenced = False  # restarted from a checkpoint: no part in any step until the coordinator's Abort
        self.committed = 0  # the last step this party finished for good (checkpointed, where it keeps checkpoints)
        self.watchers: list[Callable[[Message], None]] = []  # see each message it takes part on, before it acts on it
        # (party, split, batch_size) -> (DCOR(X, Z) by data node, collapsed), for a ScoreRequest that asks for it
        self.leakage: Callable[..., tuple[dict[str, float], bool]] | None = None

    # -- setup ---------------------------------------------------------------------------------

    def connect(self, transport) -> None:
        transport.register(self.name, self.handle)
        self.send = transport.send

    def announce(self) -> None:
        """Tell the coordinator which sample ids this party holds (ids only, never data)."""
        ids = {split: shard.sample_ids for split, shard in self.shards.items()}
        self._send(Manifest(self.name, self.plan.coordinator, -1, sample_ids=ids))

    def _install(self, modules: dict[str, nn.Module]) -> None:
        if set(modules) != set(self.nodes):
            raise ValueError(f"party {self.name!r} owns nodes {sorted(self.nodes)}, got modules {sorted(modules)}")
        self.modules = {k: m.to(self.device) for k, m in modules.items()}
        self._copy_input = {k for k, m in self.modules.items() if writes_in_place(m)}
        # The submodules that hold buffers, found once (a walk of a large model's modules costs more
        # than the checks); their buffers are read afresh each step, so a module may replace its own.
        self._buffer_owners = list({id(m): m for seg in self.modules.values() for m in seg.modules() if m._buffers}.values())
        params = [p for m in self.modules.values() for p in m.parameters()]
        for p in params:
            p.grad = None  # a fresh optimiser starts from no gradient (a rolled-back step may have left some)
        self.optimizer = self.optimizer_spec.build(params) if params else None

    @property
    def holds_weights(self) -> bool:
        return self.modules is not None

    def hold_segments(self, holds: bool) -> None:
        """Hold fresh segments (to load weights into), or none (a round-robin client whose
        segments are elsewhere): what the party holds when it starts, outside any checkpoint."""
        if not holds:
            self.modules = self.optimizer = None
        elif self.modules is None:
            if self.make_modules is None:
                raise ValueError(f"party {self.name!r} cannot hold segments")
            self._install(self.make_modules())

    # -- dispatch ------------------------------------------------------------------------------

    def handle(self, msg: Message) -> None:
        if msg.receiver != self.name:
            raise ProtocolError(f"{self.name} received a message addressed to {msg.receiver}")
        if 0 < msg.step < self.floor:
            return  # sent before the step it belongs to was aborted
        if isinstance(msg, Abort):
            return self._abort(msg)
        if self.fenced:
            return  # sent before this restarted party was rolled back
        for watch in self.watchers:
            watch(msg)
        self._check_declared(msg)
        try:
            msg = decompress(msg)  # compressed smashed data or gradients: back to the agreed dtype and shape
        except ValueError as e:  # a payload that decodes outside the finite range of its dtype
            self._reject(msg, f"{msg.kind} of step {msg.step} from {msg.sender} refused: {e}")
        if self.inbox is not None:
            msg = self._received(msg)
        if isinstance(msg, RelayRequest):
            return self._relay(msg)
        if isinstance(msg, Weights):
            return self._on_weights(msg)
        if isinstance(msg, ScoreRequest):
            return self._report_scores(msg)
        if isinstance(msg, StartStep):
            if msg.sender != self.plan.coordinator:
                raise ProtocolError(f"{self.name}: StartStep from {msg.sender}, not the coordinator")
            if self._st is not None and msg.step > self._st.step:  # pipelined: begin it when this one is done
                if self._next is not None:
                    raise ProtocolError(f"{self.name}: StartStep {msg.step} while steps {self._st.step} and "
                                        f"{self._next.step} are already started")
                self._next = msg
                return None
            st = self._state(msg.step, msg.mode, msg.split)
            st.checkpoint = msg.checkpoint
            return self._start(st, msg)
        if isinstance(msg, Activation):
            st = self._state(msg.step, msg.mode)
            node = self.nodes.get(msg.dst)
            if node is None or msg.src not in node.inputs:
                raise ProtocolError(f"{self.name}: no edge {msg.src} -> {msg.dst} here")
            self._bind(st, self.plan.node(msg.src).role, msg.sender)
            self._check_activation(msg)
            st.received.append((msg.sender, msg.tensor))
            return self._receive_activation(st, msg.src, node, msg.tensor, msg.sample_ids, msg.sender)
        st = self._state(msg.step, {Labels: "train", Output: "eval"}.get(type(msg)))
        if isinstance(msg, Gradient):
            if st.grad_from.pop(msg.dst, None) != msg.sender:
                raise ProtocolError(f"{self.name}: unexpected gradient for {msg.dst!r} from {msg.sender}")
            self._check_finite(msg, msg.tensor, f"gradient for {msg.dst}")
            st.received.append((msg.sender, msg.tensor))
            return self._receive_gradient(st, self.nodes[msg.dst], msg.tensor)
        if isinstance(msg, Labels):
            head = next((h for h in self.plan.root.heads if h.task == msg.task), None)
            if head is None or self.plan.root.name not in self.nodes:
                raise ProtocolError(f"{self.name}: labels for task {msg.task!r} do not belong here")
            if msg.task in st.labels:
                raise ProtocolError(f"{self.name}: labels for task {msg.task!r} arrived twice in step {st.step}")
            self._bind(st, head.label_role, msg.sender)
            self._check_ids(st, msg.sample_ids)
            self._check_labels(msg)
            if msg.labels.is_floating_point():
                st.received.append((msg.sender, msg.labels))
            st.labels[msg.task] = msg.labels.to(self.device)
            return self._try_loss(st)
        if isinstance(msg, Output):
            head = next((h for h in self.plan.root.heads if h.task == msg.task), None)
            if head is None or head.label_role != self.role or st.outputs_expected < 1:
                raise ProtocolError(f"{self.name}: unexpected output for task {msg.task!r} in step {st.step}")
            self._bind(st, self.plan.root.role, msg.sender)
            self._check_ids(st, msg.sample_ids)
            self._check_finite(msg, msg.tensor, f"output for task {msg.task!r}")
            self._score(st, head, msg.tensor.to(self.device))
            st.outputs_expected -= 1
            return self._maybe_finish(st)
        raise ProtocolError(f"{self.name}: unexpected message {msg.kind}")

    def _received(self, msg: Message) -> Message:
        out = self.inbox(msg)
        if type(out) is not type(msg) or (out.sender, out.receiver, out.step) != (msg.sender, msg.receiver, msg.step):
            raise TypeError(f"{self.name}'s inbox hook turned {msg.kind} {msg.sender} -> {msg.receiver} of step {msg.step} into "
                            f"{out.kind} {out.sender} -> {out.receiver} of step {out.step}; it must keep the kind and header")
        return out

    def _send(self, msg: Message) -> None:
        if self.send is None:
            raise RuntimeError(f"party {self.name!r} is not connected to a transport")
        self.send(msg if self.outbox is None else self.outbox(msg))

    def _state(self, step: int, mode: str | None = None, split: str = "") -> StepState:
        st = self._st
        if st is None:
            if mode is None:
                raise ProtocolError(f"{self.name}: message for step {step}, which has not started here")
            st = self._st = self._new_step(step, mode, split)
        elif st.step != step:
            raise ProtocolError(f"{self.name}: message for step {step} while step {st.step} is in progress")
        elif mode is not None and st.mode != mode:
            raise ProtocolError(f"{self.name}: {mode} message in a {st.mode} step")
        elif split:
            st.split = split
        return st

    def _new_step(self, step: int, mode: str, split: str) -> StepState:
        if self.nodes and self.modules is None:
            raise ProtocolError(f"{self.name} does not hold its segments (they are with another client)")
        st = StepState(step=step, mode=mode, split=split, remaining=set(self.nodes))
        if mode == "train" and self.modules:
            st.buffers = [b.detach().clone() for b in self._held_buffers()]
        if mode == "eval":
            root = self.plan.root
            st.outputs_expected = 0 if root.role == self.role else sum(h.label_role == self.role for h in root.heads)
        return st

    def _bind(self, st: StepState, role: str, party: str) -> None:
        bound = st.peers.setdefault(role, party)
        if bound != party:
            raise ProtocolError(f"{party} spoke for role {role!r}, which {bound} plays in step {st.step}")

    def _party_of(self, st: StepState, role: str) -> str:
        return self.name if role == self.role else st.peers.get(role, role)

    def _check_ids(self, st: StepState, ids: torch.Tensor) -> None:
        if st.sample_ids is None:
            st.sample_ids = ids
        elif not torch.equal(st.sample_ids, ids):
            raise ProtocolError(
                f"{self.name}: batch of step {st.step} is misaligned: sample ids differ between senders"
            )

    # -- forward -------------------------------------------------------------------------------

    def _start(self, st: StepState, msg: StartStep) -> None:
        if msg.bindings.get(self.role) != self.name:
            raise ProtocolError(f"{self.name} was started as {msg.bindings.get(self.role)!r} for role {self.role!r}")
        for role, party in msg.bindings.items():
            self._bind(st, role, party)
        if self.role not in self.plan.start_roles:
            return self._maybe_finish(st)
        shard = self.shards.get(msg.split)
        if shard is None:
            raise ProtocolError(f"{self.name} holds no {msg.split!r} data")
        rows = shard.rows(msg.sample_ids)
        self._check_ids(st, msg.sample_ids)
        for head in self.plan.root.heads:
            if head.label_role != self.role:
                continue
            if head.task not in shard.labels:
                if msg.mode == "train":
                    raise ProtocolError(f"{self.name} holds no labels for task {head.task!r}")
                continue
            y = shard.labels[head.task][rows]
            if msg.mode == "train" and self.plan.root.role != self.role:  # the loss is computed elsewhere
                receiver = self._party_of(st, self.plan.root.role)
                self._send(Labels(self.name, receiver, st.step, task=head.task, labels=y, sample_ids=msg.sample_ids))
            else:  # the loss is computed here, or evaluation outputs come back here to be scored
                st.labels[head.task] = y.to(self.device)
        for node in self.nodes.values():
            if not node.inputs:
                if shard.features is None:
                    raise ProtocolError(f"{self.name} holds no features for {msg.split!r}")
                self._forward(st, node, shard.features[rows].to(self.device))
        self._maybe_finish(st)

    def _receive_activation(self, st, src: str, node: Node, tensor, ids, sender: str) -> None:
        self._check_ids(st, ids)
        if src in st.leaves.get(node.name, {}):
            raise ProtocolError(f"{self.name}: duplicate activation {src} -> {node.name} in step {st.step}")
        leaf = tensor.to(self.device).detach().requires_grad_(st.mode == "train")
        st.leaves.setdefault(node.name, {})[src] = leaf
        st.senders[src] = sender
        if len(st.leaves[node.name]) == len(node.inputs):
            parts = [st.leaves[node.name][i] for i in node.inputs]
            self._forward(st, node, merge_inputs(parts, node.merge, node.merge_dim))

    def _forward(self, st: StepState, node: Node, x: torch.Tensor) -> None:
        module = self.modules[node.name]
        if module.training != (st.mode == "train"):  # the party alone sets its segments' mode
            module.train(st.mode == "train")
        with torch.set_grad_enabled(st.mode == "train"), self.compute("forward", node.name, len(st.sample_ids)):
            # A segment that may write in place (ReLU(inplace=True) right after the cut) gets a copy of
            # the leaf it received, whose .grad goes back; any other runs on the sender's storage.
            copy = x.requires_grad and x.is_leaf and node.name in self._copy_input
            out = module(x.clone() if copy else x)
            release = self.releases.get(node.name)
            if release is not None:  # what leaves the party (e.g. clipped and noised), with gradients through it
                out = release(out)
            penalty = self.penalties.get(node.name)
            if penalty is not None and st.mode == "train":
                st.penalties[node.name] = value = penalty(x, out)
                self.penalty_log.append((st.step, node.name, float(value.detach())))
        if not all_finite(out if isinstance(out, tuple) else (out,)):
            self._refuse(st, f"the output of {node.name}")
        st.outputs[node.name] = out
        if node.heads:
            if st.mode == "train":
                return self._try_loss(st)
            outs = out if isinstance(out, tuple) else (out,)
            for head, y_hat in zip(node.heads, outs, strict=True):
                if head.label_role == self.role:
                    self._score(st, head, y_hat)
                else:
                    receiver = self._party_of(st, head.label_role)
                    self._send(Output(self.name, receiver, st.step, task=head.task, tensor=y_hat, sample_ids=st.sample_ids))
            st.remaining.discard(node.name)
            return self._maybe_finish(st)
        consumer = self.plan.consumer(node.name)
        payload = out.detach()
        mark_finite(payload)  # checked above, as ``out``
        if consumer.role == self.role:
            self._receive_activation(st, node.name, consumer, payload, st.sample_ids, self.name)
        else:
            receiver = self._party_of(st, consumer.role)
            if st.mode == "train":
                st.grad_from[node.name] = receiver
            self._send(
                Activation(self.name, receiver, st.step, mode=st.mode, src=node.name, dst=consumer.name,
                           tensor=payload, sample_ids=st.sample_ids)
            )
        if st.mode == "eval":
            st.remaining.discard(node.name)
            self._maybe_finish(st)

    def _score(self, st: StepState, head: Head, y_hat: torch.Tensor) -> None:
        ids = st.sample_ids
        if self.keep_predictions:
            self.predictions.setdefault(head.task, []).append((ids.cpu(), y_hat.detach().cpu()))
        y = st.labels.get(head.task)
        if y is None:
            return
        totals = self.eval_totals.setdefault(st.split, {}).setdefault(head.task, EvalTotals())
        totals.correct += int((y_hat.argmax(-1) == y).sum())
        totals.count += len(y)
        totals.loss_sum += float(F.cross_entropy(y_hat, y, reduction="sum"))

    # -- loss and backward ---------------------------------------------------------------------

    def _try_loss(self, st: StepState) -> None:
        root = self.plan.root
        out = st.outputs.get(root.name)
        if out is None or any(h.task not in st.labels for h in root.heads):
            return
        outs = out if isinstance(out, tuple) else (out,)
        for h, y_hat in zip(root.heads, outs, strict=True):
            y = st.labels[h.task]
            if not y.is_floating_point() and y.numel() and not (0 <= int(y.min()) and int(y.max()) < y_hat.shape[-1]):
                raise ProtocolError(f"{self.name}: labels for task {h.task!r} of step {st.step} are not classes in "
                                    f"[0, {y_hat.shape[-1]})", party=self._party_of(st, h.label_role))
        loss = sum(h.weight * F.cross_entropy(y_hat, st.labels[h.task]) for h, y_hat in zip(root.heads, outs, strict=True))
        value = float(loss.detach())
        if not math.isfinite(value):
            self._refuse(st, "its loss")
        self.losses.append((st.step, value))
        with self.compute("backward", root.name, len(st.sample_ids)):
            loss.backward()
        self._backward_done(st, root)

    def _receive_gradient(self, st: StepState, node: Node, grad: torch.Tensor) -> None:
        out = st.outputs.get(node.name)
        if out is None or node.name not in st.remaining:
            raise ProtocolError(f"{self.name}: gradient for {node.name} before its forward or twice")
        if grad.shape != out.shape or grad.dtype != out.dtype:
            raise ProtocolError(
                f"{self.name}: gradient for {node.name} is {grad.dtype} {tuple(grad.shape)}, "
                f"but the output is {out.dtype} {tuple(out.shape)}"
            )
        with self.compute("backward", node.name, len(st.sample_ids)):
            penalty = st.penalties.pop(node.name, None)
            if penalty is None:
                out.backward(grad.to(self.device))
            else:  # a local term (e.g. NoPeek's distance correlation) joins the backward pass
                torch.autograd.backward([out, penalty], [grad.to(self.device), None])
        self._backward_done(st, node)

    def _backward_done(self, st: StepState, node: Node) -> None:
        st.remaining.discard(node.name)
        for src in node.inputs:
            leaf = st.leaves[node.name][src]
            grad = leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)
            if not all_finite([grad]):
                self._refuse(st, f"the gradient for {src}")
            mark_finite(grad)
            producer = self.plan.node(src)
            if producer.role == self.role:
                self._receive_gradient(st, producer, grad)
            else:
                receiver = st.senders[src]
                self._send(Gradient(self.name, receiver, st.step, src=node.name, dst=src, tensor=grad))
        self._maybe_finish(st)

    def _maybe_finish(self, st: StepState) -> None:
        if self._st is not st or st.remaining or st.outputs_expected:
            return
        if st.mode == "train":
            self._step_optimizer(st)
        self._st = None
        if st.mode == "train" and st.checkpoint:
            self._commit(st.step)
        self._send(StepDone(self.name, self.plan.coordinator, st.step))
        if (following := self._next) is not None:
            self._next = None
            self.handle(following)

    def _step_optimizer(self, st: StepState) -> None:
        """Step the optimiser, unless that would leave NaN or Inf in the buffers (which the forward
        pass updated), the gradients or the parameters: then roll back.

        Gradients must be finite and, in 32- and 64-bit floats, of L2 norm at most ``sqrt(max) / 16``
        in all, so that no optimiser's moments (Adam keeps g**2) overflow. The parameters the step
        leaves are checked too; should they hold NaN or Inf, the party goes back to its last
        checkpoint (the step before), since keeping a copy of every parameter each step would cost
        more than the check. Without a checkpoint store the party cannot be rolled back and says so.
        The optimiser's state gets no pass of its own: fed bounded gradients, momentum and Adam's
        moments stay finite, a state gone wrong shows in the next step's parameters, and a
        checkpoint store refuses to save any tensor that is not finite."""
        buffers = [b for b in self._held_buffers() if b.is_floating_point()]
        params = [p for group in self.optimizer.param_groups for p in group["params"]] if self.optimizer else []
        grads = [p.grad for p in params if p.grad is not None]
        big = gradient_bound(grads[0].dtype) if grads else math.inf
        # One norm over the gradients and the buffers bounds every element of both, in one
        # multi-tensor pass. Past the bound (rare), each is looked at: a buffer may be large.
        norm = float(torch.nn.utils.get_total_norm([*grads, *buffers])) if grads or buffers else 0.0
        if not (math.isfinite(norm) and norm <= big):
            if not state_finite(buffers):
                self._refuse(st, "its buffers (e.g. batch-norm statistics)")
            if grads and not bool(torch.nn.utils.get_total_norm(grads) <= big):
                finite = state_finite(grads)  # the norm may overflow where the gradients do not
                self._refuse(st, f"its optimiser state (gradients of norm over {big:.3g})" if finite
                             else "the gradients it was about to apply")
        if self.optimizer is None:
            return
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if not state_finite(params):
            if self.checkpoints is None or self.checkpoints.load() is None:
                culprit = self._culprit(st)
                self._st = self._next = None
                raise NonFinite(f"{self.name}: step {st.step} made its parameters NaN or Inf and "
                                f"cannot be rolled back (no checkpoint) (caused by the input of {culprit})", party=culprit)
            self._restore(None)
            self._refuse(st, "its parameters")

    def _held_buffers(self) -> list[torch.Tensor]:
        """The buffers of this party's segments (batch-norm statistics), each once."""
        return [b for m in self._buffer_owners for b in m.buffers(recurse=False)] if self.modules else []

    def _refuse(self, st: StepState, what: str) -> NoReturn:
        """Roll back step ``st`` (buffers as before it, no gradients kept, the step and any step
        begun after it forgotten) and raise :class:`NonFinite` naming whose input caused ``what``
        to be NaN or Inf: the other party whose tensors in this step reached the largest magnitude,
        or this party itself (its own data or state) when no other party's tensors were used."""
        culprit = self._culprit(st)
        self._roll_back(st)
        cause = "its own data or state" if culprit == self.name else f"the input of {culprit}"
        raise NonFinite(f"{self.name}: step {st.step} would make {what} NaN or Inf; refused and rolled back "
                        f"(caused by {cause})", party=culprit)

    def _roll_back(self, st: StepState) -> None:
        """Undo what step ``st`` changed so far (the buffers its forward passes updated, the
        gradients they accumulated) and forget it and any step begun after it."""
        if st.buffers is not None and self.modules:
            with torch.no_grad():
                for b, old in zip(self._held_buffers(), st.buffers, strict=True):
                    b.copy_(old)
        for m in (self.modules or {}).values():
            for p in m.parameters():
                p.grad = None
        self._st = self._next = None

    def _culprit(self, st: StepState) -> str:
        inputs: dict[str, float] = {}
        for party, t in st.received:
            if party != self.name:
                inputs[party] = max(inputs.get(party, 0.0), magnitude(t))
        if not inputs:
            return self.name
        return max(inputs, key=inputs.__getitem__) if len(inputs) > 1 else next(iter(inputs))

    def _report_scores(self, msg: ScoreRequest) -> None:
        """Send the coordinator this pass's totals over ``msg.split`` (none unless
        :attr:`share_scores`) and forget them: the next pass counts from zero."""
        if msg.sender != self.plan.coordinator:
            raise ProtocolError(f"{self.name}: ScoreRequest from {msg.sender}, not the coordinator")
        totals = self.eval_totals.pop(msg.split, {})
        meta = {task: {"count": t.count, "correct": t.correct, "loss_sum": t.loss_sum} for task, t in totals.items()}
        meta = meta if self.share_scores else {}
        if msg.leakage_batch_size and self.leakage is not None:
            by_node, collapsed = self.leakage(self, split=msg.split, batch_size=msg.leakage_batch_size)
            if by_node:
                meta["leakage"] = {"dcor": by_node, "collapsed": collapsed}
        self._send(Scores(self.name, msg.sender, msg.step, split=msg.split, meta=meta))

