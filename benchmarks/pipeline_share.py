"""Share of a local pipeline run spent in rendezvous + collectives versus inference.

    .venv/bin/python benchmarks/pipeline_share.py [--world-sizes 1,2,4,8] [--repeat 3]

For each world size: the full local pipeline (Initialize, one process per rank,
Summarize) through an in-process rendezvous server, on generated data. Per run:

- inference: the slowest rank's model time;
- comm: rendezvous + barrier + allreduce on the critical path, i.e. from the last rank's
  arrival at the communication phase to the last rank leaving it;
- waiting: how long the first rank to arrive waited for the last (skew: on a 2-core
  machine with 8 processes this is CPU contention, not communication);
- comm share = comm / slowest rank's handler time (target: < 5 % at world size 8);
- of wall = comm / the run's wall time, and comm + waiting / wall time (the strictest
  reading: every second any rank spent not computing, as a share of the whole run).

Medians over ``--repeat`` runs; prints a Markdown table for BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rendezvous_deploy.pipeline.local import rendezvous_endpoint, run_local
from rendezvous_pipeline.data import generate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--world-sizes", default="1,2,4,8")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--files", type=int, default=16)
    parser.add_argument("--samples", type=int, default=1024, help="samples per file")
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    sizes = [int(s) for s in args.world_sizes.split(",")]

    with tempfile.TemporaryDirectory(prefix="pipeline-bench-") as tmp:
        data = Path(tmp) / "data"
        generate(data, args.files, args.samples)
        rows = []
        with rendezvous_endpoint(None) as endpoint:
            for size in sizes:
                runs = []
                for _ in range(args.repeat):
                    runs.append(
                        run_local(
                            data_dir=data,
                            results_dir=Path(tmp) / "results",
                            world_size=size,
                            endpoint=endpoint,
                            batch_size=args.batch_size,
                            timeout=900,
                        )
                    )
                med = statistics.median
                rows.append(
                    (
                        size,
                        med(r.wall_seconds for r in runs),
                        med(r.max_rank_seconds for r in runs),
                        med(max(x["inference_seconds"] for x in r.added) for r in runs),
                        med(r.comm_seconds for r in runs),
                        med(r.waiting_seconds for r in runs),
                        med(r.comm_share for r in runs),
                        med(r.samples_per_second for r in runs),
                    )
                )
                print(f"world size {size}: done", file=sys.stderr)

    commit = (
        subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        or "unknown"
    )
    print(
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}; {time.strftime('%Y-%m-%d', time.gmtime())}; "
        f"commit {commit}; {args.files} files x {args.samples} samples, batch "
        f"{args.batch_size}; medians of {args.repeat} runs.\n"
    )
    print(
        "| world size | wall (s) | slowest rank (s) | inference (s) | comm (s) | "
        "waiting for peers (s) | comm share | comm of wall | comm+waiting of wall | samples/s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size, wall, rank, infer, comm, wait, share, sps in rows:
        print(
            f"| {size} | {wall:.2f} | {rank:.2f} | {infer:.2f} | {comm:.3f} | {wait:.2f} | "
            f"{100 * share:.1f}% | {100 * comm / wall:.1f}% | {100 * (comm + wait) / wall:.1f}% | "
            f"{sps:.0f} |"
        )


if __name__ == "__main__":
    main()
