"""One side of the NAT lab relay test: discover the NAT, then relay 4 MiB each way.

``python -m tests.client.relay_peer HOST PORT DISCOVERY_PORT NAME SIDE``; prints one JSON
line: the mapping found, and whether the peer's bytes came through the relay intact.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time

from fmi_client import FmiClientError
from fmi_client.relay import discover_nat, relay_connect

SIZE = 4 << 20


def payload(side: int) -> bytes:
    return hashlib.sha256(bytes([side])).digest() * (SIZE // 32)


def main() -> int:
    host, port, discovery_port, name, side = sys.argv[1:6]
    result: dict[str, object] = {}
    started = time.monotonic()
    nat = discover_nat(host, int(port), int(discovery_port), 0, started + 5)
    result["mapping"] = nat.mapping
    result["seen_ports"] = [nat.via_rendezvous.port, nat.via_discovery.port]
    result["discovery_s"] = time.monotonic() - started
    try:
        sock = relay_connect(name, host, int(port), time.monotonic() + 20)
    except FmiClientError as exc:
        result.update(ok=False, error=type(exc).__name__, text=str(exc))
        print(json.dumps(result), flush=True)
        return 0
    with sock:
        sender = threading.Thread(target=sock.sendall, args=(payload(int(side)),))
        sender.start()
        got = bytearray()
        while len(got) < SIZE:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            got += chunk
        sender.join()
        result["ok"] = bytes(got) == payload(1 - int(side))
        result["peer"] = list(sock.getpeername())
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
