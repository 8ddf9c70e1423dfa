"""CloudWatch Embedded Metric Format rules, as the specification states them.

Source: "Specification: Embedded metric format" in the Amazon CloudWatch User Guide
(CloudWatch_Embedded_Metric_Format_Specification). The checks below are its MUST rules:
a JSON object with nothing before or after it; ``_aws`` (Metadata) with ``Timestamp``
(milliseconds since the epoch) and ``CloudWatchMetrics`` (MetricDirective objects with
``Namespace``, ``Dimensions``: DimensionSets, ``Metrics``: at most 100 MetricDefinitions
with ``Name`` and optional ``Unit`` / ``StorageResolution``); objects defined by the spec
have no other members; each DimensionSet names at most 30 dimensions, each a string member
of the root; each metric name is a root member holding a number or an array of at most
100 numbers; a document is at most 256 KB (the CloudWatch Logs event limit the spec cites).
"""

from __future__ import annotations

import json
from numbers import Real
from typing import Any

UNITS = {
    "Seconds", "Microseconds", "Milliseconds", "Bytes", "Kilobytes", "Megabytes",
    "Gigabytes", "Terabytes", "Bits", "Kilobits", "Megabits", "Gigabits", "Terabits",
    "Percent", "Count", "Bytes/Second", "Kilobytes/Second", "Megabytes/Second",
    "Gigabytes/Second", "Terabytes/Second", "Bits/Second", "Kilobits/Second",
    "Megabits/Second", "Gigabits/Second", "Terabits/Second", "Count/Second", "None",
}  # fmt: skip
MAX_EVENT_BYTES = 256 * 1024
MAX_METRICS = 100
MAX_DIMENSIONS = 30
MAX_VALUES = 100
MAX_DIMENSION_VALUE = 1024


def _number(value: Any) -> bool:
    return isinstance(value, Real) and not isinstance(value, bool)


def violations(line: str) -> list[str]:
    """Every rule ``line`` breaks (empty: a valid EMF document)."""
    problems: list[str] = []
    if len(line.encode()) > MAX_EVENT_BYTES:
        problems.append(f"longer than {MAX_EVENT_BYTES} bytes")
    try:
        root = json.loads(line)
    except ValueError as exc:
        return [*problems, f"not one JSON value: {exc}"]
    if not isinstance(root, dict):
        return [*problems, "the root is not a JSON object"]
    meta = root.get("_aws")
    if not isinstance(meta, dict):
        return [*problems, "no _aws metadata object"]
    if extra := set(meta) - {"Timestamp", "CloudWatchMetrics", "LogGroupName"}:
        problems.append(f"_aws has members the spec does not define: {sorted(extra)}")
    stamp = meta.get("Timestamp")
    if not (isinstance(stamp, int) and not isinstance(stamp, bool) and stamp > 10**12):
        problems.append(f"_aws.Timestamp is not epoch milliseconds: {stamp!r}")
    directives = meta.get("CloudWatchMetrics")
    if not isinstance(directives, list):
        return [*problems, "_aws.CloudWatchMetrics is not an array"]
    for i, directive in enumerate(directives):
        where = f"CloudWatchMetrics[{i}]"
        if not isinstance(directive, dict):
            problems.append(f"{where} is not an object")
            continue
        if extra := set(directive) - {"Namespace", "Dimensions", "Metrics"}:
            problems.append(f"{where} has members the spec does not define: {sorted(extra)}")
        namespace = directive.get("Namespace")
        if not (isinstance(namespace, str) and 0 < len(namespace) <= 255):
            problems.append(f"{where}.Namespace is not a 1-255 character string")
        dimensions = directive.get("Dimensions")
        if not isinstance(dimensions, list):
            problems.append(f"{where}.Dimensions is not an array of DimensionSets")
            dimensions = []
        for dimension_set in dimensions:
            if not isinstance(dimension_set, list) or len(dimension_set) > MAX_DIMENSIONS:
                problems.append(f"{where}: a DimensionSet is not an array of <= 30 names")
                continue
            for name in dimension_set:
                value = root.get(name) if isinstance(name, str) else None
                if not isinstance(value, str):
                    problems.append(f"{where}: dimension {name!r} has no string root member")
                elif not 0 < len(value) <= MAX_DIMENSION_VALUE:
                    problems.append(f"{where}: dimension {name!r} value is 0 or > 1024 chars")
        metrics = directive.get("Metrics")
        if not isinstance(metrics, list) or not 0 < len(metrics) <= MAX_METRICS:
            problems.append(f"{where}.Metrics is not an array of 1-100 MetricDefinitions")
            metrics = []
        for definition in metrics:
            if not isinstance(definition, dict) or not isinstance(definition.get("Name"), str):
                problems.append(f"{where}: a MetricDefinition has no string Name")
                continue
            name = definition["Name"]
            if extra := set(definition) - {"Name", "Unit", "StorageResolution"}:
                problems.append(f"metric {name}: members the spec does not define: {extra}")
            if "Unit" in definition and definition["Unit"] not in UNITS:
                problems.append(f"metric {name}: Unit {definition['Unit']!r} is not a unit")
            if definition.get("StorageResolution", 60) not in (1, 60):
                problems.append(f"metric {name}: StorageResolution is not 1 or 60")
            value = root.get(name)
            ok = _number(value) or (
                isinstance(value, list) and len(value) <= MAX_VALUES and all(map(_number, value))
            )
            if not ok:
                problems.append(f"metric {name}: root member is not a number or <= 100 numbers")
    return problems
