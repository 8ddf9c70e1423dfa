"""An inference worker written the users' way, for the pipeline's ``script`` slot.

It is what the CosmicAI teams wrote for FMI, unchanged: ``import fmi``, a small helper
that opens ``fmi.Communicator(rank, world_size, "<dir>/fmi.json", "fmi_pair", 512)`` and
hints ``fast``, then ``barrier()`` and ``reduce`` of the inference time to rank 0, RANK
and WORLD_SIZE from the environment, and their JSON written to
``{result_path}/{rank}.json``. The pipeline provides ``fmi`` (fmi_client.compat) and the
``fmi.json`` beside this file. Unlike their original, a rank without data still joins
the barrier and the reduce (theirs exited first and left the others blocked).

Run it through the pipeline: ``rendezvous-deploy pipeline run --local --script
examples/pipeline/fmi_worker.py ...`` or, on AWS, upload it and name its key in the
payload's ``script``. Rank 0 also writes ``{result_path}/reduce.json`` with the sum.
"""

import json
import os
import resource
import sys
import time

import fmi
import torch

from rendezvous_pipeline.data import load_partition
from rendezvous_pipeline.model import load_model
from rendezvous_pipeline.storage import join_key, open_storage


def fmi_communicator(world_size, rank):
    """The users' helper (``fmilib.fmi_operations.fmi_communicator``)."""
    config = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fmi.json")
    communicator = fmi.Communicator(rank, world_size, config, "fmi_pair", 512)
    communicator.hint(fmi.hints.fast)
    return communicator


def inference(model, data_paths, data, batch_size):
    """Their loop: time, batches, samples and input bits over every batch of every file."""
    total_time = 0.0
    num_batches = num_samples = total_data_bits = 0
    with torch.no_grad():
        for key in data_paths:
            image, magnitude = load_partition(data.read(key)).tensors[:2]
            for start in range(0, len(image), batch_size):
                batch_image = image[start : start + batch_size]
                batch_magnitude = magnitude[start : start + batch_size]
                t0 = time.process_time()
                model(batch_image, batch_magnitude)
                total_time += time.process_time() - t0
                for tensor in (batch_image, batch_magnitude):
                    total_data_bits += tensor.element_size() * tensor.nelement() * 8
                num_batches += 1
                num_samples += len(batch_image)
    return total_time, num_batches, num_samples, total_data_bits


def main():
    rank = int(os.environ["RANK"])
    world_size = int(os.environ["WORLD_SIZE"])
    batch_size = int(os.environ["BATCH_SIZE"])
    result_path = os.environ["RESULT_PATH"]
    data_path = json.loads(os.environ["PIPELINE_ITEM"])["DATA_PATH"]  # a key, a list or null
    data_paths = json.loads(os.environ["DATA_PATH"])  # always a list of keys
    data = open_storage(os.environ["DATA_BUCKET"] or os.environ["S3_BUCKET"])
    results = open_storage(os.environ["S3_BUCKET"])

    model = load_model()
    total_time, num_batches, num_samples, total_data_bits = inference(
        model, data_paths, data, batch_size
    )
    execution_info = {
        "total_cpu_time (seconds)": total_time,
        "total_cpu_memory (MB)": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "execution_time (seconds/batch)": total_time / num_batches if num_batches else 0.0,
        "num_batches": num_batches,
        "batch_size": batch_size,
        "device": "cpu",
        "throughput_bps": total_data_bits / total_time if total_time else 0.0,
        "sample_persec": num_samples / total_time if total_time else 0.0,
        "result_path": result_path,
        "data_path": data_path,
    }

    comm = fmi_communicator(world_size, rank)
    comm.barrier()
    sum_t = comm.reduce(total_time, 0, fmi.func(fmi.op.sum), fmi.types(fmi.datatypes.double))
    if rank == 0:
        reduced = {"world_size": world_size, "sum total_cpu_time (seconds)": sum_t}
        results.write(join_key(result_path, "reduce.json"), json.dumps(reduced).encode())
        print(f"rank 0: reduced total_cpu_time over {world_size} ranks: {sum_t}")
    comm.close()

    results.write(join_key(result_path, f"{rank}.json"), json.dumps(execution_info).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
