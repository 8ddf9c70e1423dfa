"""NAT discovery and relay set-up through the NAT lab's symmetric NATs (root needed).

Builds the lab of testbed/natlab.py with ``MASQUERADE --random-fully`` on both routers,
runs the server on its public side, and on each host ``--runs`` times: ``discover_nat``
(which must say port-dependent), one plain TCP round trip to the discovery port (the
baseline: connect plus its 8-byte answer), and ``relay_connect`` under a fresh name
with the other host, then 16 MiB through the relay and back.

    sudo .venv/bin/python benchmarks/relay_natlab.py [--runs 20]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

import client_common

WORKER = r"""
import json, socket, sys, time
from fmi_client.relay import discover_nat, relay_connect
host, port, dport, name, runs, side = sys.argv[1:7]
port, dport, runs, side = int(port), int(dport), int(runs), int(side)
found, discovery, rtt, relay, bandwidth = set(), [], [], [], []
block = b"r" * (1 << 20)
for i in range(runs):
    start = time.perf_counter()
    found.add(discover_nat(host, port, dport, 0, time.monotonic() + 5).mapping)
    discovery.append(time.perf_counter() - start)
    start = time.perf_counter()
    with socket.create_connection((host, dport), 5) as sock:
        sock.recv(8)
    rtt.append(time.perf_counter() - start)
    start = time.perf_counter()
    with relay_connect(f"{name}-{i}", host, port, time.monotonic() + 20) as sock:
        relay.append(time.perf_counter() - start)
        start = time.perf_counter()
        if side == 0:
            for _ in range(16):
                sock.sendall(block)
            sock.recv(1)
        else:
            got = 0
            while got < 16 << 20:
                got += len(sock.recv(1 << 20))
            sock.sendall(b"k")
        bandwidth.append((16 << 20) / (time.perf_counter() - start))
print(json.dumps({"found": sorted(found), "discovery": discovery, "rtt": rtt,
                  "relay": relay, "bandwidth": bandwidth}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    sys.path.insert(0, str(client_common.REPO))
    from testbed import natlab
    from testbed.natlab import lab_server
    from testbed.procs import python_env

    if not natlab.available():
        sys.exit("the NAT lab needs root, ip, iptables and network namespaces")
    name = f"bench-relay-{time.monotonic_ns()}"
    with natlab.NatLab(random_fully=True) as lab, lab_server(lab) as port:
        procs = [
            subprocess.Popen(
                [*lab.exec_prefix(ns), sys.executable, "-c", WORKER, lab.server_ip, str(port),
                 "10002", name, str(args.runs), str(side)],
                cwd=client_common.REPO,
                env=python_env(),
                stdout=subprocess.PIPE,
                text=True,
            )
            for side, ns in enumerate((lab.host_a, lab.host_b))
        ]  # fmt: skip
        outs = [
            json.loads(proc.communicate(timeout=600)[0].strip().splitlines()[-1]) for proc in procs
        ]
    found = sorted({f for out in outs for f in out["found"]})
    # the later side of each relay set-up waits least: its time is the set-up itself
    relay = [min(a, b) for a, b in zip(outs[0]["relay"], outs[1]["relay"], strict=True)]

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1e3:.2f} / {max(values) * 1e3:.2f}"

    print(client_common.machine())
    print()
    discovery = [t for out in outs for t in out["discovery"]]
    rtt = [t for out in outs for t in out["rtt"]]
    print(
        client_common.table(
            ["through symmetric NATs (median / max, ms)", "value"],
            [
                ["discover_nat (two ports, one local port)", ms(discovery)],
                ["baseline: one TCP round trip to the server", ms(rtt)],
                ["relay_connect of the later side", ms(relay)],
            ],
        )
    )
    mib_s = statistics.median(outs[1]["bandwidth"]) / (1 << 20)
    print(f"\n{args.runs} runs per host; mapping found: {found}; 16 MiB relayed: {mib_s:.0f} MiB/s")


if __name__ == "__main__":
    main()
