"""JSON logs: one line per event, with the event's fields as top-level keys."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter


def configure_logging(level: str = "INFO", stream=None) -> None:
    """Send the ``rendezvous`` logger's records to ``stream`` (stderr) as JSON lines."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            "{asctime}{levelname}{message}",
            style="{",
            rename_fields={"asctime": "time", "levelname": "level", "message": "msg"},
        )
    )
    logger = logging.getLogger("rendezvous")
    logger.handlers[:] = [handler]
    logger.setLevel(level.upper())
    logger.propagate = False
    # The logging docs' "Optimization" switches: we log none of these fields, and
    # finding the caller's frame alone costs several microseconds per pairing.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
