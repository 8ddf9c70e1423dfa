"""Lambda ``REPORT`` lines -> the cost table the users built by hand. Pure functions.

Lambda bills configured memory, not memory used: GB-seconds = billed ms / 1000 x
configured MB / 1024; cost = GB-s x price per GB-s + requests x price per request.
Prices are stated with every table (defaults: us-east-1, x86, as of 2024-2026). The
plot, with the users' per-run figures beside the cost, is in figures.py.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

_FIELD = re.compile(r"([A-Za-z][A-Za-z ]*?):\s*([^\t]+?)\s*(?:\t|$)")


@dataclass(frozen=True)
class ReportLine:
    """One invocation's REPORT line."""

    request_id: str
    duration_ms: float
    billed_ms: float
    memory_mb: int
    max_memory_mb: int
    init_ms: float | None = None  # only on cold starts


@dataclass(frozen=True)
class Pricing:
    """Lambda prices in USD; ``name`` is printed with every table."""

    per_gb_second: float = 0.0000166667
    per_request: float = 0.20 / 1_000_000
    name: str = "x86, us-east-1: 0.0000166667 USD per GB-s + 0.20 USD per 1M requests"


ARM = Pricing(
    0.0000133334,
    0.20 / 1_000_000,
    "arm64, us-east-1: 0.0000133334 USD per GB-s + 0.20 USD per 1M requests",
)
X86 = Pricing()


def _number(text: str, unit: str, line: str) -> float:
    value, _, got = text.strip().partition(" ")
    if got.strip() != unit:
        raise ValueError(f"REPORT field {text!r} is not in {unit}: {line!r}")
    return float(value)


def parse_report_line(line: str) -> ReportLine:
    """Parse ``REPORT RequestId: ...\\tDuration: 7968.22 ms\\t...``; ValueError if not one."""
    text = line.strip()
    if not text.startswith("REPORT "):
        raise ValueError(f"not a REPORT line: {line!r}")
    fields = dict(_FIELD.findall(text[len("REPORT ") :]))
    needed = ("RequestId", "Duration", "Billed Duration", "Memory Size", "Max Memory Used")
    missing = [name for name in needed if name not in fields]
    if missing:
        raise ValueError(f"REPORT line lacks {', '.join(missing)}: {line!r}")
    init = fields.get("Init Duration")
    return ReportLine(
        request_id=fields["RequestId"].strip(),
        duration_ms=_number(fields["Duration"], "ms", line),
        billed_ms=_number(fields["Billed Duration"], "ms", line),
        memory_mb=int(_number(fields["Memory Size"], "MB", line)),
        max_memory_mb=int(_number(fields["Max Memory Used"], "MB", line)),
        init_ms=_number(init, "ms", line) if init else None,
    )


def gb_seconds(line: ReportLine) -> float:
    return line.billed_ms / 1000.0 * line.memory_mb / 1024.0


def cost_usd(lines: Iterable[ReportLine], pricing: Pricing = X86) -> float:
    lines = list(lines)
    return sum(gb_seconds(x) for x in lines) * pricing.per_gb_second + len(lines) * (
        pricing.per_request
    )


@dataclass(frozen=True)
class CostRow:
    """One execution (one world size) summed over all its Lambda invocations."""

    label: str
    world_size: int
    requests: int
    max_duration_ms: float
    total_duration_ms: float
    billed_gb_seconds: float
    max_memory_used_mb: int
    memory_mb: int
    cold_starts: int
    cost_usd: float


def summarize_lines(
    label: str, world_size: int, lines: Sequence[ReportLine], pricing: Pricing = X86
) -> CostRow:
    return CostRow(
        label=label,
        world_size=world_size,
        requests=len(lines),
        max_duration_ms=max((x.duration_ms for x in lines), default=0.0),
        total_duration_ms=sum(x.duration_ms for x in lines),
        billed_gb_seconds=sum(gb_seconds(x) for x in lines),
        max_memory_used_mb=max((x.max_memory_mb for x in lines), default=0),
        memory_mb=max((x.memory_mb for x in lines), default=0),
        cold_starts=sum(1 for x in lines if x.init_ms is not None),
        cost_usd=cost_usd(lines, pricing),
    )


COLUMNS = (
    "execution",
    "world size",
    "requests",
    "max duration (s)",
    "total duration (s)",
    "billed GB-s",
    "max memory used (MB)",
    "configured memory (MB)",
    "cold starts",
    "cost (USD)",
)


def row_cells(row: CostRow) -> list[str]:
    return [
        row.label,
        str(row.world_size),
        str(row.requests),
        f"{row.max_duration_ms / 1000:.2f}",
        f"{row.total_duration_ms / 1000:.2f}",
        f"{row.billed_gb_seconds:.3f}",
        str(row.max_memory_used_mb),
        str(row.memory_mb),
        str(row.cold_starts),
        f"{row.cost_usd:.6f}",
    ]


def to_markdown(rows: Sequence[CostRow], pricing: Pricing = X86) -> str:
    lines = [
        "| " + " | ".join(COLUMNS) + " |",
        "|" + "|".join("---" for _ in COLUMNS) + "|",
    ]
    lines += ["| " + " | ".join(row_cells(r)) + " |" for r in rows]
    lines.append("")
    lines.append(
        f"Pricing: {pricing.name}. Lambda bills configured memory x billed duration; "
        "Step Functions transitions and S3 requests are not included."
    )
    return "\n".join(lines) + "\n"


def to_csv(rows: Sequence[CostRow]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow(row_cells(row))
    return buffer.getvalue()
