"""What the event loop reports while the server runs, and after it stopped.

One JSON line (rate-limited) instead of the loop's traceback; a failed accept (no
descriptor left) is a refusal, counted; asyncio's late accept retry on a listener we
closed (a drain, a stop) is not a bug of ours and stays quiet.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import traceback
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rendezvous.metrics import Metrics
    from rendezvous.ratelimit import LogRateLimit

log = logging.getLogger("rendezvous")

# accept() failing for want of descriptors or memory: the connection waits in the backlog
ACCEPT_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})


def report_loop_error(
    context: dict[str, Any],
    metrics: Metrics,
    warnings: LogRateLimit,
    *,
    listener_closed: bool,
) -> None:
    """One JSON line (rate-limited) instead of the loop's traceback; a failed accept
    (no descriptor left) is a refusal, counted."""
    exc = context.get("exception")
    message = str(context.get("message", ""))
    reason = "loop_error"
    if isinstance(exc, OSError) and exc.errno in ACCEPT_ERRNOS:
        metrics.reject("accept_failed")  # a literal: tests/server/test_http.py scans for it
        reason = "accept_failed"
    elif late_accept_retry(context) and listener_closed:
        log.debug("accept retry after the listener closed", extra={"event": "accept_retry"})
        return
    if not warnings.allow(reason):
        return
    fields: dict[str, object] = {
        "event": reason,
        "detail": message,
        "error": f"{type(exc).__name__}: {exc}" if exc is not None else None,
    }
    if isinstance(exc, BaseException) and not isinstance(exc, OSError):
        # a bug of ours: its traceback, inside this one line
        fields["traceback"] = "".join(traceback.format_exception(exc))
    log.error(message or "event loop error", extra=fields)


def late_accept_retry(context: dict[str, Any]) -> bool:
    """asyncio retries accept() a second after EMFILE; when the listener was closed by
    then (a drain), the retry meets a closed socket. Nothing is lost: not a bug of ours."""
    message = str(context.get("message", ""))
    return "_start_serving" in message and isinstance(context.get("exception"), ValueError)


def after_stop(
    previous: Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object] | None,
) -> Callable[[asyncio.AbstractEventLoop, dict[str, Any]], None]:
    """The loop's own handler back, but for a late accept retry of our closed listener
    (its timer can fire after stop() returned)."""

    def handler(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        if late_accept_retry(context):
            return
        if previous is None:
            loop.default_exception_handler(context)
        else:
            previous(loop, context)

    return handler
