"""An FMI-style worker, written against FMI's Python API; only the import differs.

Run as ``python -m tests.client.fmi_style_worker CONFIG RANK WORLD_SIZE``; prints one
JSON line with everything it received so the test can compare with FMI's semantics.
"""

import json
import sys

import fmi_client.compat as fmi


def fmi_test(config_path, rank, world_size):
    comm = fmi.Communicator(rank, world_size, config_path, "fmi_pair", 512)
    comm.hint(fmi.hints.fast)
    comm.barrier()
    out = {}
    if rank == 0:
        comm.send(42, 1, fmi.types(fmi.datatypes.int))
        comm.send([1.32, 2.34], 1, fmi.types(fmi.datatypes.double_list, 2))
        comm.bcast(42, 0, fmi.types(fmi.datatypes.int))
    elif rank == 1:
        out["recv_int"] = comm.recv(0, fmi.types(fmi.datatypes.int))
        out["recv_list"] = comm.recv(0, fmi.types(fmi.datatypes.double_list, 2))
        out["bcast"] = comm.bcast(None, 0, fmi.types(fmi.datatypes.int))
    else:
        out["bcast"] = comm.bcast(None, 0, fmi.types(fmi.datatypes.int))
    out["gather"] = comm.gather([rank, rank * 10], 0, fmi.types(fmi.datatypes.int_list, 2))
    out["scatter"] = comm.scatter(
        [float(i) for i in range(2 * world_size)] if rank == 0 else None,
        0,
        fmi.types(fmi.datatypes.double_list, 2 * world_size),
    )
    out["reduce"] = comm.reduce(rank + 1, 0, fmi.func(fmi.op.prod), fmi.types(fmi.datatypes.int))
    out["allreduce"] = comm.allreduce(rank, fmi.func(fmi.op.sum), fmi.types(fmi.datatypes.int))
    out["allreduce_list"] = comm.allreduce(
        [rank, -rank], fmi.func(fmi.op.max), fmi.types(fmi.datatypes.int_list, 2)
    )
    out["custom"] = comm.allreduce(
        rank,
        fmi.func(fmi.op.custom, lambda a, b: 3 * a + b, False, False),
        fmi.types(fmi.datatypes.int),
    )
    out["scan"] = comm.scan(1.5, fmi.func(fmi.op.sum), fmi.types(fmi.datatypes.double))
    out["scan_custom"] = comm.scan(
        rank,
        fmi.func(fmi.op.custom, lambda a, b: 3 * a + b, False, False),
        fmi.types(fmi.datatypes.int),
    )
    comm.barrier()
    return out


if __name__ == "__main__":
    config, rank, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    print(json.dumps({"rank": rank, "out": fmi_test(config, rank, size)}), flush=True)
