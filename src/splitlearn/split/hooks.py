"""Per-message hooks that compose: a party's ``outbox`` may be a :class:`Chain` of them.

A hook takes the message a party is about to send and returns the message to send instead
(gradient noise, a codec, accounting). Hooks that read or change tensor values must see the
tensor itself, so a codec, which replaces the tensor by its encoding, runs last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from splitlearn.split.compression import Compressor
from splitlearn.split.messages import Message

__all__ = ["Chain", "Hook"]

Hook = Callable[[Message], Message]


@dataclass(frozen=True)
class Chain:
    """Apply ``hooks`` in order: ``Chain(GradientNoise(3.0), Compressor("int8"))`` noises each
    gradient, then sends it as int8. A codec anywhere but last is refused: the hooks after it
    would get encoded values instead of tensors."""

    hooks: tuple[Hook, ...]

    def __init__(self, *hooks: Hook) -> None:
        flat: list[Hook] = []
        for h in hooks:
            if isinstance(h, Chain):
                flat.extend(h.hooks)
            elif callable(h):
                flat.append(h)
            else:
                raise TypeError(f"a hook must be callable (message -> message), got {type(h).__name__}")
        codecs = [i for i, h in enumerate(flat) if isinstance(h, Compressor)]
        if len(codecs) > 1 or (codecs and codecs[0] != len(flat) - 1):
            raise ValueError(f"a codec must be the last hook of a chain, and there can be one: got {[type(h).__name__ for h in flat]}")
        object.__setattr__(self, "hooks", tuple(flat))

    def __call__(self, message: Message) -> Message:
        for hook in self.hooks:
            message = hook(message)
        return message
