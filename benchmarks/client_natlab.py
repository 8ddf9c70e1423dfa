"""Time to a working link through the NAT lab (two hosts behind two masquerading NAT routers).

Builds the lab of testbed/natlab.py (root needed) once per scenario, runs the server on
its public side and pairs host A with host B ``--runs`` times in one process pair
(names NAME-0, NAME-1, ...). Scenarios: routers that drop unsolicited SYNs, routers that
answer them with a reset (both, or one side), each with the link check on (64 KiB each
way, the default) and off; symmetric NATs on one side and on both (the link goes through
the server's relay: the "paths" column); then the same pair() on loopback. Reports the success rate,
the pairings per link (re-pairings after a punch round that did not get through), the
punch phase alone (each successful punch, PAIRED to connected socket, timed by wrapping
``punch._punch``), the link check, and the whole pair() of the later side (rendezvous +
punch + check), against a TCP connect to the server through one NAT.

    sudo .venv/bin/python benchmarks/client_natlab.py [--runs 100]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections import Counter

import client_common

WORKER = r"""
import json, sys, time, socket
import fmi_client.punch as punch
from fmi_client.errors import FmiClientError
host, name = sys.argv[1], sys.argv[3]
port, runs, verify = int(sys.argv[2]), int(sys.argv[4]), int(sys.argv[5])
punches, totals, connects, outcomes, pairings, checks, paths = [], [], [], [], [], [], []
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
    try:
        sock = punch.pair(f"{name}-{i}", host, port, timeout=30, verify_bytes=verify)
    except FmiClientError as exc:
        totals.append(time.perf_counter() - start)
        outcomes.append(type(exc).__name__)
        continue
    totals.append(time.perf_counter() - start)
    sock.sendall(b"x"); assert sock.recv(1) == b"x"; sock.close()
    outcomes.append("ok"); pairings.append(sock.link.pairings); checks.append(sock.link.verify_s)
    paths.append(sock.link.path)
print(json.dumps({"punch": punches, "total": totals, "connect": connects, "outcomes": outcomes,
                  "pairings": pairings, "checks": checks, "paths": paths}))
"""

# (router A, router B, link check bytes); "symmetric" is a dropping router that picks a
# new public port per destination (MASQUERADE --random-fully): the link goes through the
# server's relay.
SCENARIOS = [
    ("drop", "drop", 65536),
    ("reset", "reset", 65536),
    ("reset", "drop", 65536),
    ("drop", "drop", 0),
    ("reset", "reset", 0),
    ("symmetric", "drop", 65536),
    ("symmetric", "symmetric", 65536),
]


def ms(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values) * 1e3:.2f} / {max(values) * 1e3:.2f}"


def run_workers(prefixes: list[list[str]], host: str, port: int, runs: int, verify: int) -> list:
    name = f"bench-nat-{time.monotonic_ns()}"
    from testbed.procs import python_env

    procs = [
        subprocess.Popen(
            [*prefix, sys.executable, "-c", WORKER, host, str(port), name, str(runs), str(verify)],
            cwd=client_common.REPO,
            env=python_env(),
            stdout=subprocess.PIPE,
            text=True,
        )
        for prefix in prefixes
    ]
    return [json.loads(proc.communicate(timeout=900)[0].strip().splitlines()[-1]) for proc in procs]


def row(label: str, outs: list[dict], runs: int) -> list[str]:
    ok = sum(
        1 for a, b in zip(outs[0]["outcomes"], outs[1]["outcomes"], strict=True) if a == b == "ok"
    )
    # the later side of each pairing waits least: its pair() is rendezvous + punch + check
    totals = [min(a, b) for a, b in zip(outs[0]["total"], outs[1]["total"], strict=True)]
    pairings = [p for out in outs for p in out["pairings"]]
    return [
        label,
        f"{ok}/{runs}",
        f"{statistics.mean(pairings):.2f} / {max(pairings)}" if pairings else "-",
        ms([t for out in outs for t in out["punch"]]),
        ms([t for out in outs for t in out["checks"] if t]),  # 0.0: no check
        ms(totals),
        ms([t for out in outs for t in out["connect"]]),
        ", ".join(f"{p} {n}" for p, n in sorted(Counter(outs[0]["paths"]).items())) or "-",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated substrings: run only the scenarios whose label has one "
        "(e.g. symmetric,loopback)",
    )
    args = parser.parse_args()
    wanted = [w for w in args.only.split(",") if w]
    sys.path.insert(0, str(client_common.REPO))
    from rendezvous.embedded import BackgroundServer
    from testbed import natlab
    from testbed.natlab import lab_server

    if not natlab.available():
        sys.exit("the NAT lab needs root, ip, iptables and network namespaces")
    rows = []
    for router_a, router_b, verify in SCENARIOS:
        check = f"{verify // 1024} KiB check" if verify else "no check"
        label = f"NATs {router_a}/{router_b}, {check}"
        if wanted and not any(w in label for w in wanted):
            continue
        routers = (router_a, router_b)
        lab_options = {
            "unsolicited": tuple("drop" if r == "symmetric" else r for r in routers),
            "random_fully": tuple(r == "symmetric" for r in routers),
        }
        with natlab.NatLab(**lab_options) as lab, lab_server(lab) as port:
            prefixes = [lab.exec_prefix(lab.host_a), lab.exec_prefix(lab.host_b)]
            outs = run_workers(prefixes, lab.server_ip, port, args.runs, verify)
        rows.append(row(label, outs, args.runs))
    for verify in (65536, 0):
        check = f"{verify // 1024} KiB check" if verify else "no check"
        label = f"loopback, {check}"
        if wanted and not any(w in label for w in wanted):
            continue
        with BackgroundServer(host="127.0.0.1", port=0, http_port=None) as server:
            outs = run_workers([[], []], server.host, server.port, args.runs, verify)
        rows.append(row(label, outs, args.runs))
    print(client_common.machine())
    print()
    print(
        client_common.table(
            [
                "scenario",
                "links",
                "pairings per link (mean / max)",
                "punch, ms (median / max)",
                "link check, ms",
                "pair() of the later side, ms",
                "baseline: TCP connect to the server, ms",
                "paths",
            ],
            rows,
        )
    )
    print(
        f"\n{args.runs} pairings per scenario; drop: the router drops unsolicited SYNs; "
        "reset: it answers them with a reset; symmetric: a new public port per destination "
        "(router_a/router_b)"
    )


if __name__ == "__main__":
    main()
