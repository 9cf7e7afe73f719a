"""evar's logger (``logging.getLogger("evar")``); the CLI installs the handler that prints it."""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("evar")


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is at the time (tests and notebooks redirect it)."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


class _Formatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        prefix = "evar: " if record.levelno < logging.WARNING else f"evar: {record.levelname.lower()}: "
        return prefix + record.getMessage()


def install_cli_handler(verbosity: int = 0) -> None:
    """Print evar's messages on stderr: warnings and progress notes by default, debug with ``-v``,
    warnings only with ``-q``."""
    for handler in list(log.handlers):
        if isinstance(handler, _StderrHandler):
            log.removeHandler(handler)
    handler = _StderrHandler()
    handler.setFormatter(_Formatter())
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbosity > 0 else logging.WARNING if verbosity < 0 else logging.INFO)
    log.propagate = False
