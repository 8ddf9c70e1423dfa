"""The per-rank result format, exactly the users' (FIELD-NOTES.md), and ours beside it.

Their plotting notebooks select ``'total_cpu_time (seconds)'``, ``'total_cpu_memory (MB)'``
and ``'throughput_bps'`` from every object of ``combined_data.json``, so the ten keys
below are spelled, ordered and typed as their workers write them. Everything the
pipeline adds (rank, quality metrics, communication timings, the global figures) sits in
one object under :data:`OURS`, a key no user worker writes, so no added name can be taken
for one of theirs (their reduce step writes ``total_cpu_time`` without the unit, say).
Pure functions, no numpy: Summarize imports this without it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: The users' ten keys with the types their workers write (data_path: str, list or None).
USERS_KEYS: dict[str, tuple[type, ...]] = {
    "total_cpu_time (seconds)": (float,),
    "total_cpu_memory (MB)": (float,),
    "execution_time (seconds/batch)": (float,),
    "num_batches": (int,),
    "batch_size": (int,),
    "device": (str,),
    "throughput_bps": (float,),
    "sample_persec": (float,),
    "result_path": (str,),
    "data_path": (str, list, type(None)),
}
#: The one key under which the pipeline's own per-rank fields live.
OURS = "rendezvous"

CPU_TIME = "total_cpu_time (seconds)"
CPU_MEMORY = "total_cpu_memory (MB)"
THROUGHPUT = "throughput_bps"


def users_record(
    *,
    cpu_seconds: float,
    memory_mb: float,
    inference_seconds: float,
    num_batches: int,
    batch_size: int,
    data_bits: float,
    num_samples: int,
    result_path: str,
    data_path: Any,
    device: str = "cpu",
) -> dict[str, Any]:
    """The users' object for one rank; rates are 0.0 for a rank that ran nothing.

    As in their worker: execution time per batch and both rates are over the inference
    time; throughput is the input tensors' bits (image and magnitude) per second.
    """
    seconds = float(inference_seconds)
    return {
        CPU_TIME: float(cpu_seconds),
        CPU_MEMORY: float(memory_mb),
        "execution_time (seconds/batch)": seconds / num_batches if num_batches else 0.0,
        "num_batches": int(num_batches),
        "batch_size": int(batch_size),
        "device": str(device),
        THROUGHPUT: float(data_bits) / seconds if seconds > 0 else 0.0,
        "sample_persec": num_samples / seconds if seconds > 0 else 0.0,
        "result_path": str(result_path),
        "data_path": data_path,
    }


def format_problems(record: Any) -> list[str]:
    """What keeps ``record`` from being one of the users' per-rank objects ([] if nothing)."""
    if not isinstance(record, Mapping):
        return [f"expected a JSON object, got {type(record).__name__}"]
    problems = []
    for key, types in USERS_KEYS.items():
        if key not in record:
            problems.append(f"missing key {key!r}")
        elif isinstance(record[key], bool) or not isinstance(record[key], types):
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            problems.append(f"{key!r} should be {names}, got {record[key]!r}")
    for key in record:
        if key not in USERS_KEYS and key != OURS:
            problems.append(f"unexpected key {key!r} (ours go under {OURS!r})")
    return problems


def ours(record: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline's own fields of a per-rank object ({} for a user script's object)."""
    if not isinstance(record, Mapping):
        return {}
    extra = record.get(OURS)
    return dict(extra) if isinstance(extra, Mapping) else {}


#: What each link's record says (attributes of fmi_client's LinkInfo), under OURS["links"]:
#: its path, and why (both sides' NAT findings and the reason for the path).
LINK_FIELDS = ("path", "pairings", "punch_failures", "stalls", "nat", "peer_nat", "why")


def links_record(links: Mapping[int, Any]) -> dict[str, Any]:
    """This rank's links for OURS: ``links`` (peer rank -> fmi_client LinkInfo, as
    ``Communicator.links()`` gives) as a list in peer order, and how many went each way."""
    listed = [
        {"peer": int(peer), **{name: getattr(info, name) for name in LINK_FIELDS}}
        for peer, info in sorted(links.items())
    ]
    relayed = sum(1 for link in listed if link["path"] == "relay")
    return {"links": listed, "relayed_links": relayed, "direct_links": len(listed) - relayed}


def run_links(records: Sequence[Mapping[str, Any]]) -> dict[str, int]:
    """The run's links from every rank's OURS (each link is in both of its ranks' lists,
    counted once): how many, and how many of them went through the relay."""
    pairs: dict[tuple[int, int], bool] = {}
    for added in records:
        rank, links = added.get("rank"), added.get("links")
        if not isinstance(rank, int) or not isinstance(links, list):
            continue  # a script's rank, or a record from before links were reported
        for link in links:
            if isinstance(link, Mapping) and isinstance(link.get("peer"), int):
                pair = (min(rank, link["peer"]), max(rank, link["peer"]))
                pairs[pair] = pairs.get(pair, False) or link.get("path") == "relay"
    return {"links": len(pairs), "relayed_links": sum(pairs.values())}


def number(record: Mapping[str, Any], key: str) -> float:
    """A users' numeric field as float, 0.0 when absent or not a number."""
    value = record.get(key) if isinstance(record, Mapping) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return 0.0
    return float(value)


def trimmed_mean(values: Sequence[float], threshold: float = 1.5) -> float:
    """The mean without outliers beyond ``threshold`` x IQR: the users' ``remove_outliers_
    and_mean`` (linear-interpolated quartiles, as numpy's percentile)."""
    if not values:
        return 0.0
    ordered = sorted(values)

    def quantile(q: float) -> float:
        position = q * (len(ordered) - 1)
        low = int(position)
        high = min(low + 1, len(ordered) - 1)
        return ordered[low] + (ordered[high] - ordered[low]) * (position - low)

    q1, q3 = quantile(0.25), quantile(0.75)
    low, high = q1 - threshold * (q3 - q1), q3 + threshold * (q3 - q1)
    kept = [v for v in ordered if low <= v <= high]
    return sum(kept) / len(kept)
