"""One file-descriptor budget for the process: the TCP cap, the HTTP cap, the relay's
ends and a reserve.

Every open connection holds a descriptor. When the open-files limit is reached,
``accept()`` fails and the kernel keeps (or the loop drops) new connections without a
word, on both ports at once. So at start-up the soft limit is raised to the hard limit
where allowed, and the caps are fitted below it: the descriptors already open and
``--fd-reserve`` (the listeners, the log, the HTTP connection an operator opens at the
cap, a scrape) come first, the HTTP cap next (a tenth of what is left at most when
lowered), the relay next (two descriptors per ``--relay-max-sessions``: a session holds
both its ends, a waiting end one; a third of what is left at least when lowered, as the
TCP cap does not count a handed-off relay end), the TCP cap gets the rest. A server at
its caps refuses with a counted reason.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from rendezvous.settings import Settings


@dataclass(frozen=True)
class FdBudget:
    nofile: int | None  # the soft open-files limit in force (None: no limit)
    in_use: int  # descriptors open at start-up
    reserve: int
    tcp: int  # the effective --max-connections
    http: int  # the effective --max-http-connections
    relay: int = 0  # the effective --relay-max-sessions (0: relay off)

    def lowered(self, settings: Settings) -> bool:
        """Whether the limit made a cap lower than the setting asked for."""
        return (
            self.tcp < settings.max_connections
            or (settings.http_port is not None and self.http < settings.max_http_connections)
            or (settings.relay and self.relay < settings.relay_max_sessions)
        )


def raise_open_files_limit() -> int | None:
    """Raise the soft open-files limit to the hard one where allowed; returns the soft
    limit in force (None where there is no such limit)."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        return None if soft == resource.RLIM_INFINITY else soft
    except (ImportError, ValueError, OSError):  # pragma: no cover - not Linux
        return None


def descriptors_in_use() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:  # pragma: no cover - no /proc
        return 16


def plan(settings: Settings, nofile: int | None, in_use: int) -> FdBudget:
    """The caps for ``settings`` under the limit ``nofile``."""
    want_tcp = settings.max_connections
    want_http = settings.max_http_connections if settings.http_port is not None else 0
    want_relay = settings.relay_max_sessions if settings.relay else 0
    reserve = settings.fd_reserve
    if nofile is None:
        return FdBudget(None, in_use, reserve, want_tcp, want_http, want_relay)
    available = max(2, nofile - in_use - reserve)
    if want_tcp + want_http + RELAY_FDS_PER_SESSION * want_relay <= available:
        return FdBudget(nofile, in_use, reserve, want_tcp, want_http, want_relay)
    http = min(want_http, max(min(want_http, 8), available // 10))
    rest = max(0, available - http)
    relay = 0
    if want_relay:
        share = max(rest // 3, rest - want_tcp) // RELAY_FDS_PER_SESSION
        relay = max(1, min(want_relay, share))
    tcp = max(1, min(want_tcp, rest - RELAY_FDS_PER_SESSION * relay))
    return FdBudget(nofile, in_use, reserve, tcp, http, relay)


RELAY_FDS_PER_SESSION = 2  # a session holds both ends' sockets; a waiting end one
