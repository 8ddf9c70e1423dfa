"""The HTTP side: /livez, /readyz, /health and /metrics on aiohttp (no hand-made HTTP)."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from rendezvous.status import ServerStatus


def build_app(server: ServerStatus) -> web.Application:
    async def livez(_: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(_: web.Request) -> web.Response:
        if server.ready:
            return web.Response(text="ready\n")
        reason = "draining" if server.draining else "not accepting (connection cap reached)"
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


async def start_http(server: ServerStatus, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start the app on ``host:port`` (0 = any free port); returns (runner, bound port)."""
    runner = web.AppRunner(build_app(server), access_log=None, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    for address in runner.addresses:  # the bound (host, port, ...) of each socket
        return runner, int(address[1])
    await runner.cleanup()
    raise RuntimeError(f"the HTTP endpoint on {host}:{port} has no listening socket")
