"""One side of the NAT lab test: pair through the server, then swap numpy arrays.

``python -m tests.client.nat_peer HOST PORT NAME SIDE PROTOCOL [RELAY [NAT [PUNCH_TIMEOUT]]]``;
prints one JSON line: ``{"ok": true, "punch_s": ..., "local": ..., "peer": ..., "link":
{...}}`` (the LinkInfo's fields) or the error it got.
"""

from __future__ import annotations

import dataclasses
import json
import sys
import time

import numpy as np

from fmi_client import Communicator, FmiClientError, pair
from fmi_client.channel import Channel


def main() -> int:
    host, port, name, side, protocol = sys.argv[1:6]
    relay = sys.argv[6] if len(sys.argv) > 6 else "auto"
    nat = sys.argv[7] if len(sys.argv) > 7 else "auto"
    options = {"punch_timeout": float(sys.argv[8])} if len(sys.argv) > 8 else {}
    started = time.monotonic()
    try:
        sock = pair(
            name, host, int(port), timeout=30, protocol=protocol, relay=relay, nat=nat,
            **options,
        )  # fmt: skip
    except FmiClientError as exc:
        print(
            json.dumps(
                {
                    "ok": False,
                    "error": type(exc).__name__,
                    "text": str(exc),
                    "elapsed_s": time.monotonic() - started,
                }
            ),
            flush=True,
        )
        return 0
    elapsed = time.monotonic() - started
    with sock:
        channel = Channel(sock, int(side), 1 - int(side))
        mine = np.arange(1_000_000, dtype=np.float32) * (int(side) + 1)
        theirs = channel.exchange(mine, 0)
        expected = np.arange(1_000_000, dtype=np.float32) * (2 - int(side))
        # and a Communicator of two ranks, one per NATted host
        with Communicator(int(side), 2, f"{host}:{port}", f"{name}-comm", timeout=30) as comm:
            total = comm.allreduce(mine, "sum")
            comm_ok = bool(np.array_equal(total, np.arange(1_000_000, dtype=np.float32) * 3))
        print(
            json.dumps(
                {
                    "ok": bool(np.array_equal(theirs, expected)),
                    "comm_ok": comm_ok,
                    "punch_s": elapsed,
                    "path": sock.link.path,
                    "link": dataclasses.asdict(sock.link),
                    "local": list(sock.getsockname()),
                    "peer": list(sock.getpeername()),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
