"""Argument checks shared by the model builders."""

from collections.abc import Sequence
from numbers import Integral


def positive_int(name: str, value: object) -> int:
    """Return ``value`` as an int, or raise ValueError naming ``name`` unless it is an int >= 1."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return int(value)


def image_size(value: object, *, minimum: int = 1) -> tuple[int, int]:
    """Return ``value`` (an int or an (H, W) pair) as ``(H, W)``; both sides must be >= ``minimum``."""
    pair = (value, value) if isinstance(value, Integral) else value
    if (
        not isinstance(pair, Sequence)
        or len(pair) != 2
        or any(isinstance(s, bool) or not isinstance(s, Integral) or s < minimum for s in pair)
    ):
        raise ValueError(f"image_size must be an int or an (H, W) pair of ints >= {minimum}, got {value!r}")
    return int(pair[0]), int(pair[1])
