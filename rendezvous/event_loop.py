"""Choosing the event loop: uvloop when it is importable (and asked for), else asyncio."""

from __future__ import annotations

import asyncio

from rendezvous.settings import LoopKind


def new_event_loop(kind: LoopKind = "auto") -> asyncio.AbstractEventLoop:
    if kind in ("auto", "uvloop"):
        try:
            import uvloop
        except ImportError:
            if kind == "uvloop":
                raise RuntimeError(
                    "--loop uvloop was asked for but uvloop is not installed; "
                    "pip install uvloop or use --loop asyncio"
                ) from None
        else:
            return uvloop.new_event_loop()
    return asyncio.new_event_loop()
