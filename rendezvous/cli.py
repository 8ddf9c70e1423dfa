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
from collections.abc import Callable
from types import FrameType
from typing import Any

import click
from click.decorators import FC

from rendezvous import __version__
from rendezvous.credentials import SECRET_ENV, credential_command, load_secrets
from rendezvous.optional_deps import require_extra
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


def _env(name: str) -> str:
    return "RENDEZVOUS_" + name.upper().replace("-", "_")


def _option(name: str, **kwargs: Any) -> Callable[[FC], FC]:
    envvar = kwargs.pop("envvar", _env(name))
    return click.option(f"--{name}", envvar=envvar, show_envvar=True, show_default=True, **kwargs)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="rendezvous")
def main() -> None:
    """A TCPunch-compatible rendezvous server (protocol v1 and v2 on one port)."""


@main.command()
@_option("host", default="0.0.0.0", help="Address the rendezvous port listens on.")
@_option(
    "port",
    type=click.IntRange(0, 65535),
    default=10000,
    envvar=["RENDEZVOUS_PORT", "PORT"],
    help="Rendezvous port (TCPunch v1 and v2). PORT is honoured too.",
)
@_option(
    "http-port",
    type=click.IntRange(0, 65535),
    default=10001,
    help="Port of /livez, /readyz, /health and /metrics.",
)
@_option("http-host", default=None, help="Address of the HTTP port [default: --host].")
@_option("no-http", is_flag=True, default=False, help="Run without the HTTP port.")
@_option(
    "peer-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    help="Seconds a v2 client waits for its peer before it gets TIMEOUT (it may then "
    "resume with its reconnect token).",
)
@_option(
    "v1-peer-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=900.0,
    help="Seconds a v1 client may wait for its peer before its connection is closed "
    "(FMI's max_timeout for cold starts is 900 s).",
)
@_option(
    "request-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    help="Seconds a client has to send its complete request; silent clients are dropped.",
)
@_option(
    "max-connections",
    type=click.IntRange(min=1),
    default=15000,
    help="Cap on open rendezvous connections; beyond it new ones are refused and /readyz "
    "says 503. Keep it below the open-files limit.",
)
@_option(
    "max-waiting-per-ip",
    type=click.IntRange(min=1),
    default=1000,
    help="Cap on waiting entries from one source IP address.",
)
@_option(
    "allow-delete-pairs",
    is_flag=True,
    default=False,
    help="Honour the delete_pairs command (clears every waiting entry; anyone can send it).",
)
@_option(
    "name-pattern",
    default=None,
    help="A regular expression every pairing name must match in full (e.g. '.*pair.*').",
)
@_option(
    "drain-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    help="On SIGTERM/SIGINT, seconds to let requests in flight finish before closing.",
)
@_option(
    "max-http-connections",
    type=click.IntRange(min=1),
    default=256,
    help="Cap on open HTTP connections; at the cap a new one closes the oldest idle one "
    "(so /livez and /metrics stay reachable).",
)
@_option(
    "http-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=5.0,
    help="Seconds an HTTP connection has to send a complete request, and may stay idle.",
)
@_option(
    "max-tokens",
    type=click.IntRange(min=1),
    default=100_000,
    help="Cap on v2 reconnect tokens kept after their waiter left; the oldest is dropped "
    "first (about 0.5 kB each).",
)
@_option(
    "max-tokens-per-ip",
    type=click.IntRange(min=1),
    default=1000,
    help="Cap on such tokens per source IP address; that address's oldest goes first.",
)
@_option(
    "fd-reserve",
    type=click.IntRange(min=0),
    default=64,
    help="File descriptors kept out of both caps (listeners, logs, an operator's request).",
)
@_option(
    "log-buffer",
    type=click.IntRange(min=1024),
    default=1 << 20,
    help="Characters of log lines that may wait for a slow stderr; beyond it lines are "
    "dropped and counted (rendezvous_log_dropped_total), the event loop never waits.",
)
@_option(
    "loop",
    type=click.Choice(["auto", "asyncio", "uvloop"]),
    default="auto",
    help="Event loop: uvloop when installed (auto), or force one.",
)
@_option(
    "log-level",
    type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
    default="INFO",
    help="JSON log lines at this level and above go to stderr (INFO: one per pairing).",
)
@_option(
    "emf-interval",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Every this many seconds (at least 1), print the metrics to stdout as one CloudWatch "
    "Embedded Metric Format line (CloudWatch Logs turns them into metrics, e.g. on Fargate); "
    "0: off.",
)
@_option(
    "emf-namespace",
    default="Rendezvous",
    help="CloudWatch namespace of the EMF metrics.",
)
@_option(
    "emf-service",
    default="rendezvous",
    help="Value of the EMF metrics' Service dimension (one per deployment): 1-1024 ASCII "
    "characters, not all whitespace, no control characters.",
)
@_option(
    "discovery-port",
    type=click.IntRange(0, 65535),
    default=10002,
    help="NAT discovery port: every connection gets back the endpoint the server saw "
    "(8 bytes, as v1's reply); 0: off.",
)
@_option(
    "relay/--no-relay",
    envvar="RENDEZVOUS_RELAY",
    default=True,
    help="Relay the bytes of pairs that cannot punch (both ends ask, on the rendezvous port).",
)
@_option(
    "relay-max-sessions",
    type=click.IntRange(min=1),
    default=1000,
    help="Cap on relay sessions (waiting ends included); beyond it requests are refused.",
)
@_option(
    "relay-max-per-ip",
    type=click.IntRange(min=1),
    default=1000,
    help="Cap on relay ends (sockets) from one source IP address. Ranks behind one NAT "
    "gateway share its public address and each relayed link takes 2 ends: 1000 covers "
    "500 relayed links from one site; --relay-max-sessions still caps the total.",
)
@_option(
    "relay-max-bytes",
    type=click.IntRange(min=0),
    default=0,
    help="Bytes a relay session may carry, both directions together; 0: no limit.",
)
@_option(
    "relay-max-buffered",
    type=click.IntRange(min=0),
    default=64 << 20,
    help="Bytes the relay may hold in all its write buffers together (64 MiB); above it, "
    "senders are paused until the buffers drain; 0: no cap (each session's 2 MiB only).",
)
@_option(
    "relay-idle-timeout",
    type=click.FloatRange(min=0),
    default=300.0,
    help="Seconds without a byte either way that end a relay session; 0: never.",
)
@_option(
    "relay-max-duration",
    type=click.FloatRange(min=0),
    default=0.0,
    help="Seconds a relay session may last; 0: no limit.",
)
@_option(
    "auth-secret-file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Require credentials: a file holding the auth secret (one per line: the first "
    "mints, later ones still verify while a rotation runs). Without it the secret is read "
    f"from ${SECRET_ENV}; the file wins when both are set. With neither, auth is off: "
    "anyone may register any name.",
)
@_option(
    "allow-v1",
    default=None,
    help="With auth on, let v1 clients (FMI, the C++ client: they cannot carry a "
    "credential) register names matching this regular expression in full (e.g. "
    "'legacy-.*'); other v1 names are refused.",
)
@click.option(
    "--redis",
    "redis_url",
    envvar="RENDEZVOUS_REDIS_URL",
    show_envvar=True,
    default=None,
    help="Share the room with other replicas through this Redis (redis://HOST:6379/0, "
    "rediss:// for TLS, a password as redis://:PASSWORD@HOST): a pair meets whichever "
    "replicas its clients reach. Without it the room is in memory. Needs the 'redis' extra.",
)
@_option(
    "redis-prefix",
    default="rendezvous:",
    help="Prefix of this deployment's Redis keys and channels (several can share a Redis).",
)
@_option(
    "replica-id",
    default=None,
    help="This replica's name in Redis (1-64 of A-Z a-z 0-9 _ . -) [default: host-pid-random].",
)
@_option(
    "relay-advertise",
    default=None,
    help="With --redis: this replica's address as the other replicas reach it (e.g. the "
    "task's private IP). Both ends of a relay session then meet on the replica the first "
    "end reached: later ends are forwarded there. Without it each replica relays alone.",
)
@_option(
    "proxy-protocol",
    is_flag=True,
    default=False,
    help="Every connection starts with a PROXY v2 header from a load balancer (HAProxy "
    "send-proxy-v2, an AWS NLB target group with proxy_protocol_v2.enabled): the client's "
    "endpoint is the header's source. Connections without one are refused.",
)
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
        settings = Settings(**options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    if settings.redis_url is not None:
        require_extra("rendezvous serve --redis", "redis", ["redis"])
    route_library_logs(configure_logging(settings.log_level, max_pending=settings.log_buffer))
    limit = raise_open_files_limit()
    if limit is not None and limit < settings.max_connections + 64:
        log.warning(
            "open-files limit below --max-connections",
            extra={
                "event": "config_warning",
                "nofile": limit,
                "max_connections": settings.max_connections,
                "detail": "raise the hard limit (ulimit -Hn) or lower --max-connections; "
                "the caps are lowered to fit (see the listening line)",
            },
        )
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


def raise_open_files_limit() -> int | None:
    """Every waiting client holds a socket: take the whole hard limit of open files.

    Returns the soft limit now in force (None where there are no such limits).
    """
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return None if soft == resource.RLIM_INFINITY else soft
    except (ImportError, ValueError, OSError):  # pragma: no cover - not Linux
        return None


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
