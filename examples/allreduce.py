"""Sum a numpy array over N ranks, each its own process (locally, or one Lambda per rank).

    python examples/allreduce.py SERVER_HOST:PORT RANK WORLD_SIZE

or, to try it on one machine with an in-process server::

    python examples/allreduce.py --local 4
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np

from fmi_client import Communicator


def rank_main(rendezvous: str, rank: int, world_size: int) -> None:
    with Communicator(rank, world_size, rendezvous, "example-allreduce", timeout=60) as comm:
        mine = np.full(1_000_000, rank, dtype=np.float32)
        total = comm.allreduce(mine, "sum")
        comm.barrier()
        if rank == 0:
            print(
                f"{world_size} ranks: every element is {total[0]:.0f} "
                f"(expected {sum(range(world_size))})"
            )


def local(world_size: int) -> int:
    from rendezvous.embedded import BackgroundServer

    with BackgroundServer(host="127.0.0.1", port=0, http_port=None) as server:
        procs = [
            subprocess.Popen([sys.executable, __file__, server.address, str(r), str(world_size)])
            for r in range(world_size)
        ]
        return max(proc.wait(timeout=120) for proc in procs)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--local":
        sys.exit(local(int(sys.argv[2])))
    if len(sys.argv) != 4:
        print(__doc__)
        sys.exit(2)
    rank_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]))
