"""Two processes meet at a rendezvous server and talk over a punched TCP connection.

Start a server (``rendezvous serve``), then in two shells (or two Lambdas)::

    python examples/hello_pair.py SERVER_HOST[:PORT] alice
    python examples/hello_pair.py SERVER_HOST[:PORT] bob

Both use the pairing name "hello"; whoever comes first waits for the other.
"""

from __future__ import annotations

import sys

from fmi_client import FmiClientError, pair
from fmi_client.address import parse_rendezvous


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    try:
        host, port = parse_rendezvous(sys.argv[1])
    except ValueError as exc:
        print(f"hello_pair.py: {exc}", file=sys.stderr)
        return 2
    me = sys.argv[2]
    try:
        sock = pair("hello", host, port, timeout=60)
    except FmiClientError as exc:
        print(f"pairing failed: {exc}", file=sys.stderr)
        return 1
    with sock:
        print(f"connected: {sock.getsockname()} <-> {sock.getpeername()}")
        sock.sendall(f"hello from {me}\n".encode())
        print(sock.makefile().readline().strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
