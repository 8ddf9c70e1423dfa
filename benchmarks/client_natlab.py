"""Time to punch through the NAT lab (two hosts behind two masquerading NAT routers).

Builds the lab of testbed/natlab.py (root needed), runs the server on its public side and
pairs host A with host B ``--runs`` times. Reports the punch phase alone (from the
server's PAIRED to a connected socket, measured inside pair()) and the whole pair()
call of the later side, against the lab's TCP connect time to the server (one round
trip through the NAT) as the baseline.

    sudo .venv/bin/python benchmarks/client_natlab.py [--runs 20]
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
import json, sys, time, socket
import fmi_client.punch as punch
host, port, name, runs = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
punches, totals, connects = [], [], []
orig = punch._punch
def timed(rv, pname, deadline):
    start = time.perf_counter()
    sock = orig(rv, pname, deadline)
    punches.append(time.perf_counter() - start)
    return sock
punch._punch = timed
for i in range(runs):
    start = time.perf_counter()
    socket.create_connection((host, port), 5).close()
    connects.append(time.perf_counter() - start)
    start = time.perf_counter()
    sock = punch.pair(f"{name}-{i}", host, port, timeout=30)
    totals.append(time.perf_counter() - start)
    sock.sendall(b"x"); assert sock.recv(1) == b"x"; sock.close()
print(json.dumps({"punch": punches, "total": totals, "connect": connects}))
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
    name = f"bench-nat-{time.monotonic_ns()}"
    with natlab.NatLab() as lab, lab_server(lab) as port:
        procs = [
            subprocess.Popen(
                [
                    *lab.exec_prefix(ns),
                    sys.executable,
                    "-c",
                    WORKER,
                    lab.server_ip,
                    str(port),
                    name,
                    str(args.runs),
                ],
                cwd=client_common.REPO,
                env=python_env(),
                stdout=subprocess.PIPE,
                text=True,
            )
            for ns in (lab.host_a, lab.host_b)
        ]
        outs = [
            json.loads(proc.communicate(timeout=300)[0].strip().splitlines()[-1]) for proc in procs
        ]
    punches = [t for out in outs for t in out["punch"]]
    # the later side of each pairing waits least: its pair() is rendezvous + punch
    totals = [min(a, b) for a, b in zip(outs[0]["total"], outs[1]["total"], strict=True)]
    connects = [t for out in outs for t in out["connect"]]

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1e3:.2f} / {max(values) * 1e3:.2f}"

    print(client_common.machine())
    print()
    print(
        client_common.table(
            ["through two NATs (median / max, ms)", "value"],
            [
                ["punch (PAIRED to connected socket)", ms(punches)],
                ["pair() of the later side (rendezvous + punch)", ms(totals)],
                ["baseline: TCP connect to the server through one NAT", ms(connects)],
            ],
        )
    )
    print(f"\n{args.runs} pairings; MASQUERADE routers that drop unsolicited inbound traffic")


if __name__ == "__main__":
    main()
