"""Which party may send which message to whom: the plan's edges, at the steps the coordinator began.

A transport that carries messages between parties it does not trust (the gRPC hub) asks
:meth:`Routes.admit` about each one a remote party sends. A party may send smashed data to the
owner of the node its node feeds, a gradient back along that edge, labels from their owner to the
party computing the loss, evaluation outputs back to the label owner, relayed weights only where
the coordinator asked for them, and manifests, step reports and scores to the coordinator; only
the coordinator starts steps, relays, aborts or asks for scores. Who plays each role at a step is
what the coordinator said in that step's :class:`~splitlearn.split.messages.StartStep`: the
transport shows the coordinator's own messages to :meth:`Routes.coordinator_sent`, and nothing a
party sends changes what it learns there.
"""

from __future__ import annotations

from dataclasses import dataclass

from splitlearn.split.messages import (
    Abort,
    Activation,
    Gradient,
    Labels,
    Manifest,
    Message,
    Output,
    ProtocolError,
    RelayRequest,
    ScoreRequest,
    Scores,
    StartStep,
    StepDone,
    Weights,
)
from splitlearn.split.plan import Node, Plan

__all__ = ["RouteError", "Routes"]

_FROM_COORDINATOR = (StartStep, Abort, RelayRequest, ScoreRequest)
_TO_COORDINATOR = (Manifest, StepDone, Scores)


class RouteError(ProtocolError):
    """A message that the plan does not let its sender send to its receiver at that step."""


@dataclass(frozen=True, slots=True)
class _Started:
    mode: str
    bindings: dict[str, str]


class Routes:
    """The messages ``plan`` allows, given what its coordinator has sent so far.

    Steps are remembered ``window`` at a time (the coordinator has at most two in flight): a
    message of an older step, or of a step an :class:`~splitlearn.split.messages.Abort` voided,
    belongs to an attempt that is over and is dropped (:meth:`admit` returns False), as its
    receiver would drop it; a message of a step the coordinator never began is refused.
    """

    def __init__(self, plan: Plan, *, window: int = 8) -> None:
        self.plan, self.window = plan, window
        self.coordinator = plan.coordinator
        self._steps: dict[int, _Started] = {}
        self._relay: RelayRequest | None = None  # the relay under way, until its weights have passed
        self._floor = 0  # steps before it were voided by an abort

    def coordinator_sent(self, msg: Message) -> None:
        """Learn from a message the coordinator sent (every one, before it is delivered)."""
        if isinstance(msg, StartStep):
            self._steps[msg.step] = _Started(msg.mode, dict(msg.bindings))
            while len(self._steps) > self.window:
                del self._steps[min(self._steps)]
        elif isinstance(msg, RelayRequest):
            self._relay = msg
        elif isinstance(msg, Abort) and msg.step > self._floor:
            self._floor = msg.step
            self._relay = None

    def admit(self, msg: Message) -> bool:
        """Whether ``msg``, from a party other than the coordinator, goes on (False: it belongs to
        an attempt that is over: drop it). Raises :class:`RouteError` saying why it may not."""
        kind, sender, receiver = msg.kind, msg.sender, msg.receiver
        if isinstance(msg, _FROM_COORDINATOR):
            raise RouteError(f"{sender} may not send {kind}: only the coordinator does")
        if isinstance(msg, _TO_COORDINATOR) != (receiver == self.coordinator):
            raise RouteError(f"{sender} may not send {kind} to {receiver}: "
                             + ("only manifests, step reports and scores go to the coordinator" if receiver == self.coordinator
                                else f"{kind} goes to the coordinator only"))
        if receiver == self.coordinator:
            return True  # the coordinator checks these itself
        if isinstance(msg, Weights):
            return self._admit_weights(msg)
        if 0 < msg.step < self._floor or (self._steps and msg.step < min(self._steps)):
            return False
        started = self._steps.get(msg.step)
        if started is None:
            raise RouteError(f"{sender} sent {kind} for step {msg.step}, which the coordinator has not started")
        src, dst, mode = self._edge(msg)
        if mode is not None and mode != started.mode:
            raise RouteError(f"{sender} sent {kind} in step {msg.step}, a {started.mode} step")
        for role, party, what in ((src, sender, "sender"), (dst, receiver, "receiver")):
            if started.bindings.get(role) != party:
                raise RouteError(f"{sender} may not send {kind} to {receiver} in step {msg.step}: the {what} "
                                 f"should be {started.bindings.get(role)!r}, which plays role {role!r}")
        return True

    def _edge(self, msg: Message) -> tuple[str, str, str | None]:
        """The roles ``msg`` must travel between, and the mode of step it belongs to (None: any)."""
        plan = self.plan
        if isinstance(msg, Activation):
            node, consumer = self._node(msg.src), plan.consumer(msg.src)
            if node is None or consumer is None or consumer.name != msg.dst:
                raise RouteError(f"{msg.sender} sent smashed data along {msg.src} -> {msg.dst}, not an edge of the plan")
            return node.role, consumer.role, msg.mode
        if isinstance(msg, Gradient):
            node, consumer = self._node(msg.dst), plan.consumer(msg.dst)
            if node is None or consumer is None or consumer.name != msg.src:
                raise RouteError(f"{msg.sender} sent a gradient along {msg.src} -> {msg.dst}, not an edge of the plan")
            return consumer.role, node.role, "train"
        if isinstance(msg, Labels | Output):
            head = next((h for h in plan.root.heads if h.task == msg.task), None)
            if head is None:
                raise RouteError(f"{msg.sender} sent {msg.kind} of task {msg.task!r}, which the plan does not have")
            if isinstance(msg, Labels):
                return head.label_role, plan.root.role, "train"
            return plan.root.role, head.label_role, "eval"
        raise RouteError(f"{msg.sender} may not send {msg.kind} to {msg.receiver}")

    def _node(self, name: str) -> Node | None:
        return next((n for n in self.plan.nodes if n.name == name), None)

    def _admit_weights(self, msg: Weights) -> bool:
        relay = self._relay
        if relay is not None and relay.step == msg.step:
            via = relay.destination if relay.route == "peer" else self.plan.relay_role
            if (msg.sender, msg.receiver, msg.destination) != (relay.receiver, via, relay.destination):
                raise RouteError(f"{msg.sender} sent weights to {msg.receiver} for {msg.destination}; the relay of step "
                                 f"{relay.step} takes them from {relay.receiver} to {relay.destination} via {via}")
            self._relay = None  # once
            return True
        if 0 < msg.step < self._floor:
            return False
        raise RouteError(f"{msg.sender} sent weights outside any relay the coordinator started (step {msg.step})")
