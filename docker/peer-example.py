"""An example peer: pairs through the rendezvous server, swaps one line with its peer.

compose.yaml runs two of these with the same pairing name. Each calls
``fmi_client.pair`` (rendezvous, then a TCP connection punched straight to the other
peer), sends one line, reads the other's line and prints it; exit status 0 means both
directions worked. Runs anywhere fmi_client is installed:

    python3 peer-example.py --server HOST --name demo --me alice
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time

from fmi_client import FmiClientError, pair

MAX_LINE = 4096


def read_line(sock: socket.socket, deadline: float) -> bytes:
    """One newline-terminated line from the peer, within the deadline."""
    data = b""
    while not data.endswith(b"\n"):
        remaining = deadline - time.monotonic()
        if remaining <= 0 or len(data) > MAX_LINE:
            raise TimeoutError(f"no complete line from the peer (got {data[:80]!r})")
        sock.settimeout(remaining)
        chunk = sock.recv(MAX_LINE)
        if not chunk:
            raise ConnectionError(f"the peer closed after {len(data)} bytes")
        data += chunk
    return data[:-1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--server", default=os.environ.get("RENDEZVOUS_SERVER", "server"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("RENDEZVOUS_PORT", 10000)))
    parser.add_argument("--name", default=os.environ.get("PAIR_NAME", "compose_demo_pair"))
    parser.add_argument("--me", default=os.environ.get("PEER_NAME", socket.gethostname()))
    parser.add_argument("--protocol", choices=["v1", "v2"], default="v2")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for everything")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format=f"peer {args.me}: %(message)s")

    deadline = time.monotonic() + args.timeout
    print(f"peer {args.me}: pairing {args.name!r} via {args.server}:{args.port} ({args.protocol})")
    try:
        sock = pair(args.name, args.server, args.port, timeout=args.timeout, protocol=args.protocol)
    except FmiClientError as exc:
        print(f"peer {args.me}: pairing failed: {exc}", file=sys.stderr)
        return 1
    with sock:
        peer = "{}:{}".format(*sock.getpeername())
        print(f"peer {args.me}: connected to {peer}")
        try:
            sock.sendall(f"hello from {args.me}\n".encode())
            line = read_line(sock, deadline).decode("utf-8", "replace")
        except (OSError, TimeoutError) as exc:
            print(f"peer {args.me}: message exchange failed: {exc}", file=sys.stderr)
            return 1
    print(f"peer {args.me}: received {line!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
