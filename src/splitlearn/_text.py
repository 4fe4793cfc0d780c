"""Text from untrusted sources, kept to a readable length in errors and logs."""

from __future__ import annotations

__all__ = ["capped"]


def capped(text: str, limit: int = 1000) -> str:
    """``text``, or its first ``limit`` characters and how many were cut."""
    return text if len(text) <= limit else f"{text[:limit]}… [{len(text) - limit} more characters cut]"
