"""A rank that takes part in a barrier, then (if it is the victim) dies mid-run.

``python -m tests.client.fault_worker HOST PORT RANK WORLD_SIZE COMM_NAME VICTIM``: the
victim exits abruptly (os._exit) before the allreduce; the others print which error
they got and the rank it names.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from fmi_client import Communicator, FmiClientError


def main() -> int:
    host, port, rank_s, size_s, comm_name, victim_s = sys.argv[1:7]
    rank, size, victim = int(rank_s), int(size_s), int(victim_s)
    comm = Communicator(rank, size, f"{host}:{port}", comm_name, timeout=15)
    comm.barrier()
    if rank == victim:
        os._exit(3)
    try:
        comm.allreduce(np.ones(100_000), "sum")
        comm.allreduce(rank, "sum")
    except FmiClientError as exc:
        report = {"rank": rank, "error": type(exc).__name__, "names": exc.rank, "text": str(exc)}
    else:
        report = {"rank": rank, "error": None}
    finally:
        comm.close()
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
