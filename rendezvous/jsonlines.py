"""The JSON line formatter: python-json-logger's output, at less cost per record.

``JsonFormatter`` with three documented knobs used: ``add_fields`` (its override point)
without the generic paths we never use, ``formatTime`` cached per second, and
``json_serializer`` bound to one encoder instance; ``event_line`` builds the very line the
formatter would, without a ``LogRecord`` (the server's per-pairing ``paired`` line).
:mod:`rendezvous.logs` sets it up with the handler that writes the lines.
"""

from __future__ import annotations

import logging
import math
import time
from json.encoder import encode_basestring_ascii
from typing import Any

from pythonjsonlogger.json import JsonEncoder, JsonFormatter


class JsonLineFormatter(JsonFormatter):
    default_msec_format: str = logging.Formatter.default_msec_format or "%s,%03d"
    """``JsonFormatter`` with the same output, at less cost per record."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        encoder = JsonEncoder()
        own = None if "json_serializer" in kwargs else (lambda data, **_: encoder.encode(data))
        if own is not None:
            kwargs["json_serializer"] = own
        super().__init__(*args, **kwargs)
        # event_line() stands in for our own serializer only (plain json, ensure_ascii).
        self._own_serializer = own
        rename = self.rename_fields
        self._required_keys = [(field, rename.get(field, field)) for field in self._required_fields]
        self._lean = not (
            self.defaults or self.static_fields or self.timestamp or self.rename_fields_keep_missing
        )
        self._time_second = -1
        self._time_text = ""
        # event_line() covers the configure_logging() set-up: time, level and message
        # (renamed or not), extras not renamed, plain JSON from our own serializer.
        self._required_out = {key for _, key in self._required_keys}
        self._time_slots = self._required_fields.count("asctime")
        self._templates: dict[tuple[str, ...], str] = {}
        self._event_lines = (
            type(self) is UtcJsonLineFormatter
            and self._lean
            and own is not None
            and self.json_indent is None
            and set(self._required_fields) <= {"asctime", "levelname", "message"}
            and set(rename) <= set(self._required_fields)
            and len(self._required_out) == len(self._required_fields)
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        """``logging.Formatter.formatTime`` with the strftime done once per second."""
        if datefmt is not None:
            return super().formatTime(record, datefmt)
        return self.time_text(record.created, record.msecs)

    def time_text(self, created: float, msecs: float) -> str:
        """The ``asctime`` text of a record created at ``created`` (``msecs`` past it)."""
        second = int(created)
        if second != self._time_second:
            self._time_text = time.strftime(self.default_time_format, self.converter(second))
            self._time_second = second
        return self.default_msec_format % (self._time_text, msecs)


class UtcJsonLineFormatter(JsonLineFormatter):
    """ISO-8601 UTC timestamps (``2026-11-22T01:06:42.780Z``): log collectors (CloudWatch,
    Loki) and people in other time zones read them without guessing the server's zone."""

    converter = staticmethod(time.gmtime)
    default_time_format = "%Y-%m-%dT%H:%M:%S"
    default_msec_format = "%s.%03dZ"

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        """The base class's fields in its order: format fields, the dict message, extras."""
        if not self._lean:
            super().add_fields(log_data, record, message_dict)
            return
        attrs = record.__dict__
        rename = self.rename_fields
        for field, key in self._required_keys:
            log_data[key] = attrs.get(field)
        for key, value in message_dict.items():
            log_data[rename.get(key, key)] = value
        skip = self._skip_fields
        for key, value in attrs.items():
            if key not in skip and not (type(key) is str and key.startswith("_")):
                log_data[rename.get(key, key)] = value

    def event_line(
        self, levelname: str, msg: str, fields: dict[str, Any], created: float, msecs: float
    ) -> str | None:
        """What :meth:`format` returns for a record of ``msg`` (a str without %-args) with
        ``fields`` as its extras, or None where this formatter's set-up is not the plain one
        (then the caller must log a real record)."""
        if (
            not self._event_lines
            or self.prefix
            or self.datefmt is not None
            or self.json_serializer is not self._own_serializer
        ):
            return None
        key = (levelname, msg, *fields)
        template = self._templates.get(key)
        if template is None:
            template = self._event_template(levelname, msg, fields)
            if len(self._templates) >= 256:  # bounded: callers use a few fixed shapes
                self._templates.clear()
            self._templates[key] = template
        if not template:
            return None
        try:
            values = [
                encode_basestring_ascii(value) if type(value) is str else _json_scalar(value)
                for value in fields.values()
            ]
        except TypeError:
            return None  # a value plain JSON does not cover: the formatter decides
        if self._time_slots:
            time_json = encode_basestring_ascii(self.time_text(created, msecs))
            return template % (*((time_json,) * self._time_slots), *values)
        return template % tuple(values)

    def _event_template(self, levelname: str, msg: str, fields: dict[str, Any]) -> str:
        """The line for these fields as a %-template (time and values as ``%s``), or ""
        when an extra's name is one the formatter would drop or that clashes."""
        parts = []
        for field, key in self._required_keys:
            if field == "asctime":
                value = "%s"
            elif field == "levelname":
                value = encode_basestring_ascii(levelname).replace("%", "%%")
            else:
                value = encode_basestring_ascii(msg).replace("%", "%%")
            parts.append(encode_basestring_ascii(key).replace("%", "%%") + ": " + value)
        for key in fields:
            if (
                type(key) is not str
                or key in self._skip_fields
                or key.startswith("_")
                or key in self._required_out
            ):
                return ""
            parts.append(encode_basestring_ascii(key).replace("%", "%%") + ": %s")
        return "{" + ", ".join(parts) + "}"


def _json_scalar(value: Any) -> str:
    """``json.dumps(value)`` for str, int, finite float, bool and None; TypeError else."""
    kind = type(value)
    if kind is str:
        return encode_basestring_ascii(value)
    if kind is float:
        if math.isfinite(value):
            return float.__repr__(value)
    elif kind is int:
        return int.__repr__(value)
    elif value is None:
        return "null"
    elif kind is bool:
        return "true" if value else "false"
    raise TypeError(f"{kind.__name__} is left to the formatter")
