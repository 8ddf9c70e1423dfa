"""The ``serve`` command's options, in groups; each is also RENDEZVOUS_<NAME> in the environment.

Each group is a function returning one decorator that applies its options in the order
they are listed, so ``--help`` lists groups and options in source order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click
from click.decorators import FC

from rendezvous.credentials import SECRET_ENV


def _env(name: str) -> str:
    return "RENDEZVOUS_" + name.upper().replace("-", "_")


def _option(name: str, **kwargs: Any) -> Callable[[FC], FC]:
    envvar = kwargs.pop("envvar", _env(name))
    return click.option(f"--{name}", envvar=envvar, show_envvar=True, show_default=True, **kwargs)


def _stack(*decorators: Callable[[FC], FC]) -> Callable[[FC], FC]:
    """One decorator applying these as if written one above the other (first on top)."""

    def apply(f: FC) -> FC:
        for decorate in reversed(decorators):
            f = decorate(f)
        return f

    return apply


def listener_options() -> Callable[[FC], FC]:
    """Where the server listens: the rendezvous port and the HTTP port."""
    return _stack(
        _option("host", default="0.0.0.0", help="Address the rendezvous port listens on."),
        _option(
            "port",
            type=click.IntRange(0, 65535),
            default=10000,
            envvar=["RENDEZVOUS_PORT", "PORT"],
            help="Rendezvous port (TCPunch v1 and v2). PORT is honoured too.",
        ),
        _option(
            "http-port",
            type=click.IntRange(0, 65535),
            default=10001,
            help="Port of /livez, /readyz, /health and /metrics.",
        ),
        _option("http-host", default=None, help="Address of the HTTP port [default: --host]."),
        _option("no-http", is_flag=True, default=False, help="Run without the HTTP port."),
    )


def pairing_options() -> Callable[[FC], FC]:
    """Timeouts and caps of the rendezvous port, which names it accepts, and the drain on stop."""
    return _stack(
        _option(
            "peer-timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=60.0,
            help="Seconds a v2 client waits for its peer before it gets TIMEOUT (it may then "
            "resume with its reconnect token).",
        ),
        _option(
            "v1-peer-timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=900.0,
            help="Seconds a v1 client may wait for its peer before its connection is closed "
            "(FMI's max_timeout for cold starts is 900 s).",
        ),
        _option(
            "request-timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=5.0,
            help="Seconds a client has to send its complete request; silent clients are dropped.",
        ),
        _option(
            "max-connections",
            type=click.IntRange(min=1),
            default=15000,
            help="Cap on open rendezvous connections; beyond it new ones are refused and /readyz "
            "says 503. Keep it below the open-files limit.",
        ),
        _option(
            "max-waiting-per-ip",
            type=click.IntRange(min=1),
            default=1000,
            help="Cap on waiting entries from one source IP address.",
        ),
        _option(
            "allow-delete-pairs",
            is_flag=True,
            default=False,
            help="Honour the delete_pairs command (clears every waiting entry; "
            "anyone can send it).",
        ),
        _option(
            "name-pattern",
            default=None,
            help="A regular expression every pairing name must match in full (e.g. '.*pair.*').",
        ),
        _option(
            "drain-timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=10.0,
            help="On SIGTERM/SIGINT, seconds to let requests in flight finish before closing.",
        ),
    )


def hardening_options() -> Callable[[FC], FC]:
    """Caps that keep the HTTP port, reconnect tokens and file descriptors bounded."""
    return _stack(
        _option(
            "max-http-connections",
            type=click.IntRange(min=1),
            default=256,
            help="Cap on open HTTP connections; at the cap a new one closes the oldest idle one "
            "(so /livez and /metrics stay reachable).",
        ),
        _option(
            "http-timeout",
            type=click.FloatRange(min=0, min_open=True),
            default=5.0,
            help="Seconds an HTTP connection has to send a complete request, and may stay idle.",
        ),
        _option(
            "max-tokens",
            type=click.IntRange(min=1),
            default=100_000,
            help="Cap on v2 reconnect tokens kept after their waiter left; the oldest is dropped "
            "first (about 0.5 kB each).",
        ),
        _option(
            "max-tokens-per-ip",
            type=click.IntRange(min=1),
            default=1000,
            help="Cap on such tokens per source IP address; that address's oldest goes first.",
        ),
        _option(
            "fd-reserve",
            type=click.IntRange(min=0),
            default=64,
            help="File descriptors kept out of both caps (listeners, logs, an operator's request).",
        ),
    )


def runtime_options() -> Callable[[FC], FC]:
    """Log buffering, the event loop and the log level."""
    return _stack(
        _option(
            "log-buffer",
            type=click.IntRange(min=1024),
            default=1 << 20,
            help="Characters of log lines that may wait for a slow stderr; beyond it lines are "
            "dropped and counted (rendezvous_log_dropped_total), the event loop never waits.",
        ),
        _option(
            "loop",
            type=click.Choice(["auto", "asyncio", "uvloop"]),
            default="auto",
            help="Event loop: uvloop when installed (auto), or force one.",
        ),
        _option(
            "log-level",
            type=click.Choice(["DEBUG", "INFO", "WARNING", "ERROR"], case_sensitive=False),
            default="INFO",
            help="JSON log lines at this level and above go to stderr (INFO: one per pairing).",
        ),
    )


def emf_options() -> Callable[[FC], FC]:
    """CloudWatch Embedded Metric Format lines on stdout."""
    return _stack(
        _option(
            "emf-interval",
            type=click.FloatRange(min=0),
            default=0.0,
            help="Every this many seconds (at least 1), print the metrics to stdout as one "
            "CloudWatch Embedded Metric Format line (CloudWatch Logs turns them into metrics, "
            "e.g. on Fargate); 0: off.",
        ),
        _option(
            "emf-namespace",
            default="Rendezvous",
            help="CloudWatch namespace of the EMF metrics.",
        ),
        _option(
            "emf-service",
            default="rendezvous",
            help="Value of the EMF metrics' Service dimension (one per deployment): 1-1024 ASCII "
            "characters, not all whitespace, no control characters.",
        ),
    )


def relay_options() -> Callable[[FC], FC]:
    """The NAT discovery port and the relay for pairs that cannot punch."""
    return _stack(
        _option(
            "discovery-port",
            type=click.IntRange(0, 65535),
            default=10002,
            help="NAT discovery port: every connection gets back the endpoint the server saw "
            "(8 bytes, as v1's reply), so a client learns whether its NAT can be punched and "
            "tells its peer (NAT hints; clients send hints only where this port answers). "
            "Open it where the rendezvous port is open; 0: off.",
        ),
        _option(
            "relay/--no-relay",
            envvar="RENDEZVOUS_RELAY",
            default=True,
            help="Relay the bytes of pairs that cannot punch (both ends ask, on the rendezvous "
            "port). Relayed bytes flow through this server (its data transfer); --no-relay: "
            "clients that need the relay get RelayRefused saying so.",
        ),
        _option(
            "relay-max-sessions",
            type=click.IntRange(min=1),
            default=1000,
            help="Cap on relay sessions (waiting ends included); beyond it requests are refused.",
        ),
        _option(
            "relay-max-per-ip",
            type=click.IntRange(min=1),
            default=1000,
            help="Cap on relay ends (sockets) from one source IP address. Ranks behind one NAT "
            "gateway share its public address and each relayed link takes 2 ends: 1000 covers "
            "500 relayed links from one site; --relay-max-sessions still caps the total.",
        ),
        _option(
            "relay-max-bytes",
            type=click.IntRange(min=0),
            default=0,
            help="Bytes a relay session may carry, both directions together; 0: no limit.",
        ),
        _option(
            "relay-max-buffered",
            type=click.IntRange(min=0),
            default=64 << 20,
            help="Bytes the relay may hold in all its write buffers together (64 MiB); above it, "
            "senders are paused until the buffers drain; 0: no cap (each session's 2 MiB only).",
        ),
        _option(
            "relay-idle-timeout",
            type=click.FloatRange(min=0),
            default=300.0,
            help="Seconds without a byte either way that end a relay session; 0: never.",
        ),
        _option(
            "relay-max-duration",
            type=click.FloatRange(min=0),
            default=0.0,
            help="Seconds a relay session may last; 0: no limit.",
        ),
    )


def auth_options() -> Callable[[FC], FC]:
    """Credentials: the auth secret and which v1 names may still register."""
    return _stack(
        _option(
            "auth-secret-file",
            type=click.Path(dir_okay=False),
            default=None,
            help="Require credentials: a file holding the auth secret (one per line: the first "
            "mints, later ones still verify while a rotation runs). Without it the secret is read "
            f"from ${SECRET_ENV}; the file wins when both are set. With neither, auth is off: "
            "anyone may register any name.",
        ),
        _option(
            "allow-v1",
            default=None,
            help="With auth on, let v1 clients (FMI, the C++ client: they cannot carry a "
            "credential) register names matching this regular expression in full (e.g. "
            "'legacy-.*'); other v1 names are refused.",
        ),
    )


def replica_options() -> Callable[[FC], FC]:
    """Sharing the room with other replicas through Redis."""
    return _stack(
        click.option(
            "--redis",
            "redis_url",
            envvar="RENDEZVOUS_REDIS_URL",
            show_envvar=True,
            default=None,
            help="Share the room with other replicas through this Redis (redis://HOST:6379/0, "
            "rediss:// for TLS, a password as redis://:PASSWORD@HOST): a pair meets whichever "
            "replicas its clients reach. Without it the room is in memory. Needs the 'redis' "
            "extra.",
        ),
        _option(
            "redis-prefix",
            default="rendezvous:",
            help="Prefix of this deployment's Redis keys and channels (several can share a Redis).",
        ),
        _option(
            "replica-id",
            default=None,
            help="This replica's name in Redis (1-64 of A-Z a-z 0-9 _ . -) "
            "[default: host-pid-random].",
        ),
        _option(
            "relay-advertise",
            default=None,
            help="With --redis: this replica's address as the other replicas reach it (e.g. the "
            "task's private IP; 'auto': from the ECS task metadata endpoint, else the host "
            "name's address). Both ends of a relay session then meet on the replica the first "
            "end reached: later ends are forwarded there. Without it each replica relays alone.",
        ),
    )


def proxy_options() -> Callable[[FC], FC]:
    """PROXY v2 headers from a load balancer in front of the rendezvous port."""
    return _stack(
        _option(
            "proxy-protocol",
            is_flag=True,
            default=False,
            help="Every connection starts with a PROXY v2 header from a load balancer (HAProxy "
            "send-proxy-v2, an AWS NLB target group with proxy_protocol_v2.enabled): the client's "
            "endpoint is the header's source. Connections without one are refused.",
        ),
    )
