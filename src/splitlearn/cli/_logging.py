"""Logs of the long-running commands (serve, join): readable lines or JSON lines."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager

__all__ = ["add_log_argument", "configure", "operational"]


class JsonLines(logging.Formatter):
    """One JSON object per record: time, level, logger, event, message and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        out = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
               "level": record.levelname.lower(), "logger": record.name,
               "event": getattr(record, "event", "message"), "message": record.getMessage()}
        out.update(getattr(record, "fields", {}))
        return json.dumps(out, default=str)


def add_log_argument(parser) -> None:
    parser.add_argument("--log-format", choices=("text", "json"), default="text",
                        help="operational events as readable lines (default) or JSON lines, on stdout")


def configure(fmt: str) -> logging.Handler:
    """Send splitlearn's INFO events to stdout; return the handler (remove it when done)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonLines() if fmt == "json" else logging.Formatter("%(message)s"))
    logger = logging.getLogger("splitlearn")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    return handler


@contextmanager
def operational(fmt: str, on_sigterm: Callable[[], None]):
    """While in the block: splitlearn's events go to stdout as ``fmt``, and SIGTERM calls
    ``on_sigterm`` (only the main thread can take signals; elsewhere it is left alone)."""
    handler = configure(fmt)
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: on_sigterm()) if main else None
    try:
        yield
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        logging.getLogger("splitlearn").removeHandler(handler)
