"""Ask the zone's authoritative name servers directly until they answer the new IP.

Resolvers cache (TTL); the authoritative servers are the truth, so ``up`` and
``dns-refresh`` only report success when every one of them answers the new address.
"""

from __future__ import annotations

import ipaddress
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from deploy.aws import DeployError


@dataclass(frozen=True)
class NameServer:
    host: str  # an IP address
    port: int = 53

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def parse_server(text: str) -> NameServer:
    """``1.2.3.4``, ``ns1.example.net:5353`` or ``[::1]:5353``; ValueError when malformed."""
    text = text.strip()
    host, port = text, "53"
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port = rest.lstrip(":") or "53"
    elif text.count(":") == 1:
        host, port = text.split(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{text!r} is not HOST[:PORT] (e.g. 192.0.2.53 or 127.0.0.1:5353)")
    return NameServer(host, int(port))


def resolve_name_servers(names: Sequence[str]) -> list[NameServer]:
    """The IPv4 addresses of the zone's NS names (Route 53's delegation set)."""
    import dns.resolver

    servers: list[NameServer] = []
    for name in names:
        try:
            answer = dns.resolver.resolve(name, "A", lifetime=5)
        except Exception as err:
            raise DeployError(
                f"cannot resolve the zone's name server {name} ({err}); pass "
                f"--dns-server HOST[:PORT] to verify against a server you can reach"
            ) from err
        servers.extend(NameServer(r.address) for r in answer)
    return servers


def ask(server: NameServer, fqdn: str, timeout: float = 2.0) -> tuple[list[str], bool]:
    """The A values ``server`` answers for ``fqdn`` and whether the answer is authoritative."""
    import dns.flags
    import dns.message
    import dns.query
    import dns.rdatatype

    query = dns.message.make_query(fqdn, "A")
    query.flags &= ~dns.flags.RD  # an authoritative server answers from its own zone
    host = server.host
    if not _is_ip(host):
        host = socket.gethostbyname(host)
    response = dns.query.udp(query, host, port=server.port, timeout=timeout)
    values = sorted(
        rdata.address
        for rrset in response.answer
        if rrset.rdtype == dns.rdatatype.A
        for rdata in rrset
    )
    return values, bool(response.flags & dns.flags.AA)


def verify(
    servers: Sequence[NameServer],
    fqdn: str,
    ip: str,
    *,
    poll: float,
    timeout: float,
    on_progress: Callable[[str], None] = lambda _text: None,
) -> None:
    """Return once every server answers exactly ``ip`` authoritatively; else raise."""
    if not servers:
        raise DeployError("no name servers to verify against: pass --dns-server HOST[:PORT]")
    deadline = time.monotonic() + timeout
    last: dict[NameServer, str] = {}
    while True:
        pending = []
        for server in servers:
            try:
                values, authoritative = ask(server, fqdn, timeout=min(2.0, max(poll, 0.5)))
                if values == [ip] and authoritative:
                    continue
                last[server] = (
                    f"answers {', '.join(values) or 'nothing'}"
                    + ("" if authoritative else " (not authoritative)")
                )
            except Exception as err:
                last[server] = f"no answer ({type(err).__name__})"
            pending.append(server)
        if not pending:
            return
        on_progress(
            f"waiting for {len(pending)}/{len(servers)} name servers to answer {ip} "
            f"({'; '.join(f'{s} {last[s]}' for s in pending)})"
        )
        if time.monotonic() > deadline:
            detail = "; ".join(f"{s} {last[s]}" for s in pending)
            raise DeployError(
                f"DNS not updated after {timeout:.0f} s: {fqdn} should be {ip} but {detail}. "
                f"Route 53 reported the change INSYNC, so check the zone's delegation "
                f"(NS records at the registrar) or the --dns-server given"
            )
        time.sleep(poll)
