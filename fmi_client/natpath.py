"""Which path a pairing takes, from both sides' NAT findings; and this process's finding.

Each side reports its own NAT class in its v2 request (:mod:`tcpunch.nathint`) and
reads its peer's in the PAIRED response, so both sides hold the same two classes and,
through the same tables below, reach the same decision: punch, or skip the doomed
attempt and meet in the relay at once (under the session of the rendezvous they just
shared, :func:`tcpunch.relay.pairing_session`). ``PUNCHABLE`` is symmetric, so which
side is "ours" does not matter.

Our own class comes from NAT discovery (:func:`fmi_client.relay.discover_nat`), probed
once per process per server (a Lambda pays it once; a failure is remembered for
RETRY_FIRST s, doubling, and
the probe is bounded by DISCOVERY_WINDOW so a firewalled discovery port costs little;
it reaches the rendezvous port only once the discovery port accepted, so a server
without one never sees it),
or from the rendezvous itself: a public port that differs from our local port means
our NAT rewrote it, taken as port-dependent and remembered for the next pairing. A
host that accepts no inbound connection cannot be measured from inside: it declares it
(``pair(..., nat="no-inbound")``). Hints are sent only to a server that answered the
discovery probe (so ours), which is why a declared class still probes once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from fmi_client.errors import FmiClientError, PunchFailed
from fmi_client.relay import discover_nat
from tcpunch import Endpoint, NatClass

log = logging.getLogger("fmi_client")

#: The server's default NAT discovery port (``rendezvous serve --discovery-port``).
DEFAULT_DISCOVERY_PORT = 10002
#: The longest a discovery probe may take (once per process and server).
DISCOVERY_WINDOW = 0.5
#: A probe that failed is tried again after this long, doubling per failure up to
#: RETRY_MAX: a warm Lambda lives for hours, and one failure at its cold start (a
#: deploy, a blip) must not cost it NAT hints for good; a server without a discovery
#: port costs at most one failed probe per RETRY_MAX.
RETRY_FIRST = 60.0
RETRY_MAX = 3600.0
#: pair()'s ``nat``: "auto" finds out (discovery, then the rendezvous); the others
#: declare it (discovery still runs once, to learn whether the server takes hints).
NAT_CHOICES = ("auto", "endpoint-independent", "port-dependent", "no-inbound")

Path = Literal["punch", "relay"]

U, EI, PD, NI = (
    NatClass.UNKNOWN,
    NatClass.ENDPOINT_INDEPENDENT,
    NatClass.PORT_DEPENDENT,
    NatClass.NO_INBOUND,
)

#: (our class, the peer's class) -> whether a punch can work. A port-dependent NAT maps
#: the peer's destination to a port the server never saw; a host without inbound
#: connections never completes one (every TCP open needs an inbound SYN or SYN-ACK).
#: Unknown is tried: the punch's own budget then decides.
PUNCHABLE: Mapping[tuple[NatClass, NatClass], bool] = {
    (U, U): True,   (U, EI): True,   (U, PD): False,  (U, NI): False,
    (EI, U): True,  (EI, EI): True,  (EI, PD): False, (EI, NI): False,
    (PD, U): False, (PD, EI): False, (PD, PD): False, (PD, NI): False,
    (NI, U): False, (NI, EI): False, (NI, PD): False, (NI, NI): False,
}  # fmt: skip

#: (pair()'s ``relay``, punchable) -> the path. "never" punches even a doomed pair (its
#: PunchFailed then names the findings); "always" relays even a punchable one.
PATHS: Mapping[tuple[str, bool], Path] = {
    ("auto", True): "punch",
    ("auto", False): "relay",
    ("never", True): "punch",
    ("never", False): "punch",
    ("always", True): "relay",
    ("always", False): "relay",
}

_BLOCKS = {
    PD: "NAT maps per destination (port-dependent, symmetric)",
    NI: "host accepts no inbound connection",
}


@dataclass(frozen=True)
class PathChoice:
    path: Path
    why: str  # for LinkInfo.why and the log line


def findings(ours: NatClass, theirs: NatClass) -> str:
    return f"our NAT {ours.label}, the peer's {theirs.label}"


def choose_path(relay: str, ours: NatClass, theirs: NatClass) -> PathChoice:
    """The path both sides take for these two classes (the tables above)."""
    punchable = PUNCHABLE[ours, theirs]
    path = PATHS[relay, punchable]
    if relay == "always":
        return PathChoice(path, "relay='always'")
    if punchable:
        return PathChoice(path, f"punch: {findings(ours, theirs)}")
    blocked = [f"our {_BLOCKS[ours]}"] if ours in _BLOCKS else []
    blocked += [f"the peer's {_BLOCKS[theirs]}"] if theirs in _BLOCKS else []
    reason = " and ".join(blocked)
    if path == "relay":
        return PathChoice(path, f"skipped the punch: {reason}")
    return PathChoice(path, f"relay='never': punching although {reason}")


ServerKey = tuple[str, int, int]  # (server IP, rendezvous port, discovery port or 0)


class NatFindings:
    """This process's finding per server: probed once; a failure is remembered for
    RETRY_FIRST s (doubling per failure), then probed again."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._found: dict[ServerKey, NatClass] = {}
        self._answered: set[ServerKey] = set()  # servers whose discovery port answered
        self._probing: dict[ServerKey, threading.Lock] = {}
        self._failed: dict[ServerKey, tuple[float, float]] = {}  # (retry at, next wait)

    def own(self, key: ServerKey, deadline: float) -> NatClass:
        """Our class for ``key``'s server: known, or probed now (one thread probes, others
        wait for it); UNKNOWN when discovery is off or did not answer."""
        with self._lock:
            if key in self._found or not key[2] or self._waiting_to_retry(key):
                return self._found.get(key, U)
            probing = self._probing.setdefault(key, threading.Lock())
        with probing:
            with self._lock:
                if key in self._found or self._waiting_to_retry(key):
                    return self._found.get(key, U)
            now = time.monotonic()
            until = min(deadline, now + DISCOVERY_WINDOW)
            try:
                mapping = discover_nat(key[0], key[1], key[2], 0, until, staged=True)
            except (FmiClientError, OSError) as exc:
                if until < now + DISCOVERY_WINDOW:
                    return U  # the caller's deadline cut it short: try again next time
                with self._lock:
                    wait = self._failed.get(key, (0.0, RETRY_FIRST))[1]
                    self._failed[key] = (time.monotonic() + wait, min(wait * 2, RETRY_MAX))
                log.info(
                    "%s. This process treats its NAT as unknown for %.0f s and sends "
                    "%s:%d no NAT hints meanwhile (so peers cannot skip a doomed punch); "
                    "discovery_port=None skips the probe",
                    exc, wait, key[0], key[1],
                )  # fmt: skip
                return U
            else:
                found = EI if mapping.punchable else PD
                with self._lock:
                    self._answered.add(key)
                    self._failed.pop(key, None)
            with self._lock:
                self._found.setdefault(key, found)
                return self._found[key]

    def _waiting_to_retry(self, key: ServerKey) -> bool:
        """Whether ``key``'s last probe failed and its retry time has not come (the
        caller holds the lock)."""
        failed = self._failed.get(key)
        return failed is not None and time.monotonic() < failed[0]

    def speaks_hints(self, key: ServerKey) -> bool:
        """Whether ``key``'s server answered NAT discovery: only then is it ours, and only
        then do our requests carry hint flags (a foreign v2 server gets flags it has
        always had; what the fork's server does with reserved bits is not known)."""
        with self._lock:
            return key in self._answered

    def learned(self, key: ServerKey, public: Endpoint, local: Endpoint) -> NatClass:
        """What the rendezvous adds: a rewritten port makes an unknown class
        port-dependent (remembered); a measured class stands."""
        with self._lock:
            found = self._found.get(key, U)
            if found is U and public.port != local.port:
                found = self._found[key] = PD
            return found

    def forget(self) -> None:
        """Drop every finding (tests; a process whose network changed)."""
        with self._lock:
            self._found.clear()
            self._answered.clear()
            self._failed.clear()


#: The findings of this process.
FINDINGS = NatFindings()


def own_class(nat: str, key: ServerKey, deadline: float) -> tuple[NatClass, bool]:
    """Our class before the request, declared by ``nat`` or found (``"auto"``), and whether
    to send it: discovery is probed either way (once), since only a server that answers it
    is sent hints."""
    found = FINDINGS.own(key, deadline)
    ours = found if nat == "auto" else NatClass.from_label(nat)
    return ours, FINDINGS.speaks_hints(key)


def with_findings(exc: PunchFailed, ours: NatClass, theirs: NatClass, unheard: str) -> PunchFailed:
    """``exc`` with what the rendezvous said of both NATs (``unheard``: why the peer's
    finding did not reach us, "" when it did)."""
    where = f"our NAT {ours.label}; {unheard}" if unheard else findings(ours, theirs)
    return PunchFailed(f"{exc} NAT findings: {where}.")


def unhinted(protocol: str, hints: bool, discovery_port: int, nat: str) -> str:
    """Why no NAT hints cross the rendezvous, in a user's words ("" when they may)."""
    if protocol == "v1":
        why = "v1 carries no NAT hints"
    elif not discovery_port:
        why = "no NAT hints without NAT discovery (discovery_port=None)"
    elif not hints:
        why = f"no NAT hints: the server's NAT discovery port {discovery_port} did not answer"
    else:
        return ""
    return why + (f", so the peer does not know we declared nat={nat!r}" if nat != "auto" else "")
