"""``rendezvous serve``: every option is also an environment variable RENDEZVOUS_<NAME>.

Heavy imports (asyncio, the server, aiohttp, uvloop) wait until ``serve`` has put in its
early signal handlers: in a container the server is PID 1, and the kernel drops a SIGTERM
sent to PID 1 while its disposition is the default, so one sent during startup would be
lost and the runtime would kill the process 10 s later.
"""

from __future__ import annotations

import errno
import logging
import os
import signal
import socket
import sys
import threading
from types import FrameType
from typing import Any

import click

from rendezvous import __version__, task_address
from rendezvous.credentials import SECRET_ENV, credential_command, load_secrets
from rendezvous.optional_deps import require_extra
from rendezvous.serve_options import (
    auth_options,
    emf_options,
    hardening_options,
    listener_options,
    pairing_options,
    proxy_options,
    relay_options,
    replica_options,
    runtime_options,
)
from rendezvous.settings import Settings
from tcpunch.credential import MAX_TTL

SERVER_MODULES = ("aiohttp", "prometheus_client", "pythonjsonlogger")

log = logging.getLogger("rendezvous")


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""In this order: SIGTERM's handler (visible in /proc/PID/status SigCgt) goes in last."""

_early_stop: list[int] = []
"""Stop signals received before the event loop's own handlers were in place."""


def _record_stop(signum: int, frame: FrameType | None) -> None:
    _early_stop.append(signum)


def install_early_signal_handlers() -> bool:
    """Record SIGTERM/SIGINT until the loop takes over (False where signals can't be set)."""
    if threading.current_thread() is not threading.main_thread():
        return False
    _early_stop.clear()
    for sig in STOP_SIGNALS:
        signal.signal(sig, _record_stop)
    return True


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="rendezvous")
def main() -> None:
    """A TCPunch-compatible rendezvous server (protocol v1 and v2 on one port)."""


@main.command()
@listener_options()
@pairing_options()
@hardening_options()
@runtime_options()
@emf_options()
@relay_options()
@auth_options()
@replica_options()
@proxy_options()
def serve(no_http: bool, auth_secret_file: str | None, **options: Any) -> None:  # click's
    """Run the rendezvous server in the foreground until SIGTERM or SIGINT.

    On a signal it stops accepting, reports not-ready, lets requests in flight finish
    for up to --drain-timeout seconds, closes the rest and exits 0.
    """
    install_early_signal_handlers()
    require_extra("rendezvous serve", "server", SERVER_MODULES)
    from rendezvous.event_loop import new_event_loop
    from rendezvous.logs import configure_logging, flush_logs, route_library_logs

    if no_http:
        options["http_port"] = None
    if not options["discovery_port"]:
        options["discovery_port"] = None  # 0 on the command line: off
    try:
        options["auth_secrets"] = load_secrets(auth_secret_file, os.environ)
        options["relay_advertise"] = task_address.resolve(options["relay_advertise"], os.environ)
        settings = Settings(**options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if settings.redis_url is not None:
        require_extra("rendezvous serve --redis", "redis", ["redis"])
    route_library_logs(configure_logging(settings.log_level, max_pending=settings.log_buffer))
    try:
        loop = new_event_loop(settings.loop)
    except RuntimeError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        loop.run_until_complete(_serve(settings))
    except OSError as exc:
        flush_logs()
        click.echo(f"rendezvous: {describe_listen_error(settings, exc)}", err=True)
        sys.exit(1)
    finally:
        loop.close()
        flush_logs()  # buffered lines go out before any traceback or exit


@main.command()
@click.option("--prefix", required=True, help="One job's names, e.g. 'run-4f2a/'.")
@click.option(
    "--ttl",
    type=click.IntRange(min=1, max=MAX_TTL),
    default=3600,
    show_default=True,
    help=f"Seconds until the credential expires (at most {MAX_TTL}: 7 days).",
)
@click.option(
    "--auth-secret-file",
    type=click.Path(dir_okay=False),
    default=None,
    envvar="RENDEZVOUS_AUTH_SECRET_FILE",
    show_envvar=True,
    help=f"The server's auth secret file (the first line mints) [default: ${SECRET_ENV}; "
    "the file wins when both are set].",
)
def credential(prefix: str, ttl: int, auth_secret_file: str | None) -> None:
    """Print a credential for pairing names that start with PREFIX.

    Give it to the job's clients (RENDEZVOUS_CREDENTIAL, or credential= in Python): a
    server started with the same secret then lets them register names under PREFIX until
    the TTL runs out. End PREFIX with a separator: 'job1' would also cover 'job10'.
    """
    try:
        click.echo(credential_command(prefix, ttl, auth_secret_file))
    except ValueError as exc:  # AuthSecretError is a ValueError; it never holds the secret
        raise click.UsageError(str(exc)) from None


def _probe_bind(host: str, port: int) -> None:
    """Bind (and close) a socket as the server would; raises what the server's bind raised."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(1)


def _listen_problem(host: str, port: int, exc: OSError, host_flag: str, port_flag: str) -> str:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if isinstance(exc, socket.gaierror):
        return (
            f"cannot listen on {where} ({host_flag}): {host!r} is not an IP address or a host "
            f"name that resolves ({exc.strerror}); check {host_flag} (e.g. 0.0.0.0 for every "
            "interface)"
        )
    if exc.errno == errno.EADDRINUSE:
        return (
            f"cannot listen on {where} ({port_flag}): address already in use; stop the "
            f"other process or choose another {port_flag}"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return (
            f"cannot listen on {where} ({host_flag}): this machine has no address {host}; "
            f"check {host_flag} (e.g. 0.0.0.0 for every interface)"
        )
    if exc.errno == errno.EACCES:
        return (
            f"cannot listen on {where} ({port_flag}): permission denied; ports below 1024 "
            f"need root or CAP_NET_BIND_SERVICE, or choose another {port_flag}"
        )
    return f"cannot listen on {where} ({host_flag}/{port_flag}): {exc}"


def describe_listen_error(settings: Settings, exc: OSError) -> str:
    """Which address and flag a failed start tripped on, found by binding each again.

    The server closes what it opened when start() fails, so a probe fails exactly where
    the server did (unless another process changed things in between).
    """
    listeners = [(settings.host, settings.port, "--host", "--port")]
    if settings.http_port is not None:
        host_flag = "--http-host" if settings.http_host else "--host"
        listeners.append(
            (settings.http_host or settings.host, settings.http_port, host_flag, "--http-port")
        )
    if settings.discovery_port:
        listeners.append((settings.host, settings.discovery_port, "--host", "--discovery-port"))
    for host, port, host_flag, port_flag in listeners:
        try:
            _probe_bind(host, port)
        except OSError as probe:
            return _listen_problem(host, port, probe, host_flag, port_flag)
    return f"cannot listen: {exc}"


async def _serve(settings: Settings) -> None:
    import asyncio

    from rendezvous.logs import flush_logs
    from rendezvous.server import RendezvousServer

    server = RendezvousServer(settings)
    emf = None
    if settings.emf_interval > 0:
        from rendezvous.emf import EmfWriter, read_metrics

        emf = EmfWriter(
            lambda: read_metrics(server.metrics),
            settings.emf_interval,
            namespace=settings.emf_namespace,
            service=settings.emf_service,
        )
        server.metrics.emf_dropped = lambda: emf.dropped if emf is not None else 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    # The loop's handlers take over from the early ones; a signal that arrived before
    # (recorded) or arrives while starting still means a clean exit.
    for sig in STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    try:
        if _early_stop:
            log.info(
                "stopped before listening",
                extra={
                    "event": "stopped_early",
                    "signal": signal.Signals(_early_stop[0]).name,
                },
            )
            return
        await server.start()
        if emf is not None:
            emf.start(loop)
            log.info(
                "EMF metrics on stdout",
                extra={
                    "event": "emf_on",
                    "interval": settings.emf_interval,
                    "namespace": settings.emf_namespace,
                    "service": settings.emf_service,
                },
            )
        flush_logs()  # "listening" is what supervisors and tests wait for
        await stop.wait()
    finally:
        for sig in STOP_SIGNALS:
            loop.remove_signal_handler(sig)
    await server.drain()
    if emf is not None:
        emf.stop()  # the last interval, drain included
