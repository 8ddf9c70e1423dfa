"""A per-rank result in the users' format, written out literally from FIELD-NOTES.md.

"Per-rank result JSON written to {result_path}/{rank}.json: total_cpu_time (seconds),
total_cpu_memory (MB), execution_time (seconds/batch), num_batches, batch_size, device,
throughput_bps, sample_persec, result_path, data_path" with values of the types their
worker writes (seconds and MB as floats, counts as ints, the run's result prefix and
the rank's DATA_PATH: one key, a list of keys, or null).
"""

from __future__ import annotations

from typing import Any

USERS_RESULT = {
    "total_cpu_time (seconds)": 5.814478928000014,
    "total_cpu_memory (MB)": 14320.256568,
    "execution_time (seconds/batch)": 2.907239464000007,
    "num_batches": 2,
    "batch_size": 512,
    "device": "cpu",
    "throughput_bps": 28910559.67036082,
    "sample_persec": 176.11208376194455,
    "result_path": "result/partition-25MB/1",
    "data_path": "data/1.pt",
}
#: DATA_PATH is one key, a list of keys, or null (a rank without data).
DATA_PATH_TYPES = (str, list, type(None))


def assert_users_format(record: dict[str, Any], ours: str | None = "rendezvous") -> None:
    """Key for key and type for type the users' object (plus at most our one key)."""
    keys = set(record) - ({ours} if ours else set())
    assert keys == set(USERS_RESULT), sorted(keys ^ set(USERS_RESULT))
    for key, reference in USERS_RESULT.items():
        if key == "data_path":
            assert isinstance(record[key], DATA_PATH_TYPES), (key, record[key])
        else:
            assert type(record[key]) is type(reference), (key, record[key])
