"""REPORT line parsing and cost arithmetic against figures computed by hand."""

from __future__ import annotations

import pytest

from rendezvous_deploy.pipeline.report import (
    ARM,
    X86,
    ReportLine,
    cost_usd,
    gb_seconds,
    parse_report_line,
    summarize_lines,
    to_csv,
    to_markdown,
)

COLD = (
    "REPORT RequestId: 3f1c0e1a-0000-4000-8000-000000000001\tDuration: 7968.22 ms\t"
    "Billed Duration: 7969 ms\tMemory Size: 128 MB\tMax Memory Used: 90 MB\t"
    "Init Duration: 283.22 ms\t\n"
)
WARM = (
    "REPORT RequestId: abc\tDuration: 24300.5 ms\tBilled Duration: 24301 ms\t"
    "Memory Size: 10240 MB\tMax Memory Used: 7168 MB\t"
)


def test_parse_cold_and_warm_lines() -> None:
    cold = parse_report_line(COLD)
    assert cold == ReportLine(
        "3f1c0e1a-0000-4000-8000-000000000001", 7968.22, 7969, 128, 90, 283.22
    )
    warm = parse_report_line(WARM)
    assert warm.init_ms is None
    assert (warm.billed_ms, warm.memory_mb, warm.max_memory_mb) == (24301, 10240, 7168)


@pytest.mark.parametrize(
    "line",
    [
        "START RequestId: abc Version: $LATEST",
        "REPORT RequestId: abc\tDuration: 5 ms",
        "REPORT RequestId: a\tDuration: 5 s\tBilled Duration: 5 ms\tMemory Size: 1 MB\t"
        "Max Memory Used: 1 MB",
    ],
)
def test_bad_lines_are_refused(line: str) -> None:
    with pytest.raises(ValueError):
        parse_report_line(line)


def test_gb_seconds_bill_configured_memory() -> None:
    # 7969 ms at 128 MB: 7.969 s x 0.125 GB = 0.996125 GB-s (the 90 MB used do not count)
    assert gb_seconds(parse_report_line(COLD)) == pytest.approx(0.996125)
    # 24301 ms at 10240 MB: 24.301 x 10 = 243.01 GB-s
    assert gb_seconds(parse_report_line(WARM)) == pytest.approx(243.01)


def test_cost_by_hand() -> None:
    lines = [parse_report_line(COLD), parse_report_line(WARM)]
    # (0.996125 + 243.01) GB-s x 0.0000166667 + 2 x 0.0000002
    expected = 244.006125 * 0.0000166667 + 2 * 0.0000002
    assert cost_usd(lines) == pytest.approx(expected, rel=1e-12)
    assert cost_usd(lines) == pytest.approx(0.0040671, abs=1e-7)
    assert cost_usd(lines, ARM) == pytest.approx(244.006125 * 0.0000133334 + 4e-7, rel=1e-12)


def test_users_published_row_used_memory_used_not_configured() -> None:
    # Their 100 MB row: 130 ranks x 24.3 s on 10240 MB Lambdas, 7 GB used, "0.36-0.38 USD".
    # Billed on configured memory: 130 x 24.3 x 10 = 31590 GB-s -> 0.5265 USD (+ requests).
    line = ReportLine("x", 24300.0, 24300, 10240, 7168)
    row = summarize_lines("r", 130, [line] * 130, X86)
    assert row.billed_gb_seconds == pytest.approx(31590.0)
    assert row.cost_usd == pytest.approx(31590 * 0.0000166667 + 130 * 2e-7)
    assert (row.requests, row.memory_mb, row.max_memory_used_mb) == (130, 10240, 7168)
    assert row.cost_usd == pytest.approx(0.5265, abs=1e-4)
    # Their figure is what 7 GB *used* would cost: 130 x 24.3 x 7 GB-s x price = 0.3686.
    as_if_used = summarize_lines("r", 130, [ReportLine("x", 24300.0, 24300, 7168, 7168)] * 130)
    assert as_if_used.cost_usd == pytest.approx(0.3686, abs=1e-4)


def test_markdown_and_csv_state_the_figures_and_pricing() -> None:
    row = summarize_lines("ws2-run", 2, [parse_report_line(COLD), parse_report_line(WARM)])
    markdown = to_markdown([row])
    assert "| ws2-run | 2 | 2 | 24.30 | 32.27 | 244.006 | 7168 | 10240 | 1 | 0.004067 |" in markdown
    assert "0.0000166667 USD per GB-s" in markdown
    csv_text = to_csv([row]).splitlines()
    assert csv_text[0].startswith("execution,world size,requests")
    assert csv_text[1] == "ws2-run,2,2,24.30,32.27,244.006,7168,10240,1,0.004067"
