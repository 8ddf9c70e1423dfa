"""One side of the NAT lab's punch tests: pair many times in one process, report each.

``python -m tests.client.punch_peer HOST PORT NAME RUNS [UNSTALL_COMMAND...]`` pairs
``NAME-0`` .. ``NAME-<RUNS-1>`` one after the other, swaps 256 KiB each way over every
link, and prints one JSON line: per run ``[outcome, seconds, link info]``. With
UNSTALL_COMMAND (e.g. ``ip netns exec ROUTER iptables -D FORWARD ...``), the command runs
once, synchronously, when pair() logs the first failed link check: a stall injected in
a router for the first punched flow is lifted before the re-pairing starts.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import subprocess
import sys
import threading
import time

from fmi_client import FmiClientError, pair

SWAP = bytes(range(256)) * 1024


class Unstall(logging.Handler):
    def __init__(self, command: list[str]) -> None:
        super().__init__()
        self.command = command
        self.ran: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if not self.ran and "link check failed" in record.getMessage():
            self.ran.append(record.getMessage())
            subprocess.run(self.command, check=True, timeout=30)


def swap(sock) -> bool:
    received = bytearray()
    sender = threading.Thread(target=sock.sendall, args=(SWAP,))
    sender.start()
    while len(received) < len(SWAP):
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
    sender.join(30)
    return bytes(received) == SWAP


def main() -> int:
    host, port, name, runs = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    unstall = Unstall(sys.argv[5:]) if len(sys.argv) > 5 else None
    if unstall is not None:
        logger = logging.getLogger("fmi_client")
        logger.addHandler(unstall)
        logger.setLevel(logging.INFO)
    results = []
    for i in range(runs):
        started = time.monotonic()
        try:
            sock = pair(f"{name}-{i}", host, port, timeout=40, punch_timeout=20, verify_timeout=1)
        except FmiClientError as exc:
            results.append([type(exc).__name__, time.monotonic() - started, str(exc)])
            continue
        elapsed = time.monotonic() - started
        with sock:
            sock.settimeout(20)
            ok = swap(sock)
            results.append(["ok" if ok else "bad data", elapsed, dataclasses.asdict(sock.link)])
    print(json.dumps({"runs": results, "unstalled": unstall.ran if unstall else []}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
