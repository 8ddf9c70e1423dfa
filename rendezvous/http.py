"""The HTTP side: /livez, /readyz, /health and /metrics on aiohttp (no hand-made HTTP).

The port is public, so it is guarded: ``timeout`` seconds for a complete request (aiohttp's
keep-alive timer, which also runs from the moment a connection opens and closes one whose
headers are still incomplete) and for an idle keep-alive connection; at most ``cap`` open
connections, where a new one closes the oldest connection that is not in a request (so
``/livez`` and ``/metrics`` stay reachable under a flood of idle connections) and is
refused with a 503 only when every one is busy. Errors from what clients send (bad
request lines, over-long headers) become one ``refused`` line each, rate-limited, and a
``rendezvous_rejected_total{reason="http_malformed"}`` count; never a traceback.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rendezvous.ratelimit import LogRateLimit
from rendezvous.status import ServerStatus

log = logging.getLogger("rendezvous")

REFUSAL = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


def build_app(server: ServerStatus) -> web.Application:
    async def livez(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if server.ready:
            return web.Response(text="ready\n")
        reason = getattr(server, "not_ready_reason", None) or (
            "draining" if server.draining else "not accepting (connection cap reached)"
        )
        return web.Response(status=503, text=f"not ready: {reason}\n")

    async def health(_: web.Request) -> web.Response:
        return web.json_response(server.health(), status=200 if server.ready else 503)

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(server.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application()
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


class HttpErrorLog(logging.Logger):
    """The logger aiohttp's request handlers get: each error it reports (with its
    traceback) becomes a count and one rate-limited ``refused`` line without one."""

    def __init__(self, status: ServerStatus, warnings: LogRateLimit) -> None:
        super().__init__("rendezvous.http", logging.DEBUG)
        self.status = status
        self.warnings = warnings

    def handle(self, record: logging.LogRecord) -> None:
        """Every record aiohttp logs here (debug or exception) ends up in this call."""
        exc = record.exc_info[1] if record.exc_info else None
        reason = "http_malformed" if isinstance(exc, HttpProcessingError) else "http_error"
        self.status.metrics.reject(reason)
        if not self.warnings.allow(reason):
            return
        args = record.args
        client = args[0] if isinstance(args, tuple) and args else None
        detail = record.getMessage() if exc is None else f"{type(exc).__name__}: {exc}"
        log.warning(
            "refused",
            extra={
                "event": "refused",
                "reason": reason,
                "detail": detail[:300],
                "client": str(client),
                "protocol": "http",
            },
        )


class _Refusal(asyncio.Protocol):
    """Answers 503 and closes: every HTTP connection is busy in a request."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        if isinstance(transport, asyncio.WriteTransport):
            transport.write(REFUSAL)
        transport.close()


class GuardedSite(web.TCPSite):
    """``web.TCPSite`` with a cap on open connections (see the module docstring)."""

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, cap: int, status: ServerStatus
    ) -> None:
        super().__init__(runner, host, port, reuse_address=True, backlog=1024)
        self.cap = cap
        self.status = status

    async def start(self) -> None:
        await web.BaseSite.start(self)  # registers the site; TCPSite.start would listen
        server = self._runner.server
        assert server is not None  # the runner is set up
        self.status.metrics.http_open = lambda: len(server.connections)
        self._server = await asyncio.get_running_loop().create_server(
            self._protocol, self._host, self._port, backlog=self._backlog, reuse_address=True
        )
        sockets = self._server.sockets
        self._bound_port = sockets[0].getsockname()[1] if sockets else self._port

    def _protocol(self) -> asyncio.BaseProtocol:
        server = self._runner.server
        assert server is not None
        handlers = server.connections
        if len(handlers) >= self.cap:
            live = [h for h in handlers if h.transport is not None and not h.transport.is_closing()]
            if len(live) >= self.cap:
                # aiohttp has no public "in a request" flag; its handlers keep this one.
                idle = [h for h in live if not getattr(h, "_request_in_progress", False)]
                if not idle:
                    self.status.metrics.reject("http_cap")
                    return _Refusal()
                idle[0].force_close()  # the oldest idle one makes room
                self.status.metrics.reject("http_evicted")
        return server()


async def start_http(
    server: ServerStatus,
    host: str,
    port: int,
    *,
    cap: int = 256,
    timeout: float = 5.0,
    warnings: LogRateLimit | None = None,
) -> tuple[web.AppRunner, int]:
    """Start the app on ``host:port`` (0 = any free port); returns (runner, bound port)."""
    if warnings is None:
        warnings = LogRateLimit(log, asyncio.get_running_loop().time)
    runner = web.AppRunner(
        build_app(server),
        access_log=None,
        handle_signals=False,
        keepalive_timeout=timeout,
        logger=HttpErrorLog(server, warnings),
    )
    await runner.setup()
    site = GuardedSite(runner, host, port, cap, server)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    for address in runner.addresses:  # the bound (host, port, ...) of each socket
        return runner, int(address[1])
    await runner.cleanup()
    raise RuntimeError(f"the HTTP endpoint on {host}:{port} has no listening socket")
