"""A rendezvous server for synchronous code: its own event loop in a daemon thread.

The client's tests and ``rendezvous-deploy pipeline run --local`` use it::

    with BackgroundServer() as server:
        pair("name", *server.address.split(":"))
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Any

from rendezvous.event_loop import new_event_loop
from rendezvous.server import RendezvousServer
from rendezvous.settings import Settings


class BackgroundServer:
    """Runs a RendezvousServer on its own event loop in a daemon thread (for sync code).

    ``port=0`` / ``http_port=0`` pick free ports (read them back from ``.port`` and
    ``.http_port``); ``http_port=None`` runs no HTTP endpoint. Other keyword arguments
    are :class:`rendezvous.settings.Settings` fields (``peer_timeout=0.5`` ...).
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        http_port: int | None = 0,
        **settings: Any,
    ) -> None:
        self.settings = Settings(host=host, port=port, http_port=http_port, **settings)
        self.host = host
        self.port = port
        self.http_port = http_port
        self.server: RendezvousServer | None = None
        self._loop = new_event_loop(self.settings.loop)
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="rendezvous-server", daemon=True)
        self._thread.start()
        if not self._started.wait(timeout=30):
            self.close()
            raise RuntimeError("the rendezvous server did not start within 30 s")
        error = self._start_error()
        if error is not None:
            self._thread.join(timeout=10)
            self._loop.close()
            self._closed = True
            raise RuntimeError(f"the rendezvous server failed to start: {error}") from error

    def _start_error(self) -> BaseException | None:
        """What the server thread failed with (set there, after ``__init__`` set None)."""
        return self._error

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = RendezvousServer(self.settings)
        try:
            await server.start()
        except BaseException as exc:  # reported to the constructor
            self._error = exc
            self._started.set()
            return
        self.server = server
        self.port = server.port
        self.http_port = server.http_port
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await server.stop()

    def close(self) -> None:
        """Stop the server and join its thread; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        if self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(timeout=30)
        if not self._thread.is_alive():
            self._loop.close()

    def __enter__(self) -> BackgroundServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:  # best effort for forgotten servers
        if not getattr(self, "_closed", True):
            with contextlib.suppress(Exception):
                self.close()
