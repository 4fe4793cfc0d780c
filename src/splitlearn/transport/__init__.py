"""Transports implementing :class:`splitlearn.split.transport.Transport`."""

from splitlearn.transport.local import LocalTransport

__all__ = ["LocalTransport"]
