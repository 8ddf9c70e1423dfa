"""Progress lines, a spinner while waiting, and tables, all on stderr via rich.

stdout stays free for the one machine-readable result (``host:10000``), so scripts can
capture it while people watch the progress. Marks: ``~`` something was created or
changed, ``✓`` checked and already right (nothing done), ``✗`` failed. Off a terminal
(a pipe, a CI log) lines are not wrapped, so ARNs and tables stay whole; tables even
where COLUMNS is set (a number cut short is worse than a long line). Text is printed
as it is: no rich markup (``[...]`` in a value) and no emoji codes (``:secret:``).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

CHANGED = "~"
VERIFIED = "✓"
FAILED = "✗"
PIPE_WIDTH = 4096  # wide enough for any ARN or table row; rich defaults to 80 off a terminal
REPEAT_S = 30.0  # off a terminal, repeat an unchanged wait line this often


def make_console(stderr: bool = True) -> Console:
    """A console that wraps at the terminal's width, and not at all in a pipe. No emoji
    codes: ``:secret:`` in a Secrets Manager ARN would print as an emoji."""
    console = Console(stderr=stderr, highlight=False, emoji=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, highlight=False, emoji=False, width=PIPE_WIDTH)
    return console


def _clock(elapsed: float, timeout: float | None) -> str:
    shown = f"{elapsed:.0f} s elapsed"
    if timeout is not None:
        shown += f", {max(0.0, timeout - elapsed):.0f} s left"
    return shown


class Reporter:
    """Tells the user what is happening: done steps, waits with live status, tables."""

    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or make_console()
        self.quiet = quiet

    def step(self, text: str, changed: bool = True) -> None:
        """One finished step: ``~`` when it changed something, a dimmed ``✓`` when it
        only verified that all was already right, so changes stand out."""
        if self.quiet:
            return
        if changed:
            self.console.print(f"[yellow]{CHANGED}[/yellow] {escape(text)}", soft_wrap=True)
        else:
            self.console.print(f"[dim]{VERIFIED} {escape(text)}[/dim]", soft_wrap=True)

    def change(self, what: str, old: object, new: object) -> None:
        """One changed value, old -> new (``(none)`` where there was or will be nothing)."""
        old_text = "(none)" if old in (None, "", [], ()) else str(old)
        new_text = "(none)" if new in (None, "", [], ()) else str(new)
        self.step(f"{what}: {old_text} -> {new_text}")

    def fail(self, text: str) -> None:
        """A step that did not succeed; the command goes on to say why and exit non-zero."""
        if not self.quiet:
            self.console.print(f"[red]{FAILED}[/red] {escape(text)}", soft_wrap=True)

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"  {escape(text)}", soft_wrap=True)  # paths stay whole

    def warn(self, text: str) -> None:
        """Something looks wrong but the command goes on: say so, in yellow."""
        if not self.quiet:
            self.console.print(f"[yellow]warning:[/yellow] {escape(text)}", soft_wrap=True)

    @contextmanager
    def waiting(self, text: str, timeout: float | None = None) -> Iterator[Callable[[str], None]]:
        """A spinner labelled ``text``; the yielded function updates its detail line with
        the elapsed time (and the time left of ``timeout``). Off a terminal, a line is
        printed when the detail changes and every REPEAT_S seconds while it does not."""
        if self.quiet:
            yield lambda _detail: None
            return
        began = time.monotonic()
        last: dict[str, Any] = {"detail": None, "at": 0.0}
        with self.console.status(escape(text)) as status:

            def update(detail: str) -> None:
                now = time.monotonic()
                clock = _clock(now - began, timeout)
                status.update(escape(f"{text}: {detail} ({clock})"))
                if self.console.is_terminal:
                    return
                if detail != last["detail"] or now - last["at"] >= REPEAT_S:
                    last.update(detail=detail, at=now)
                    self.console.print(escape(f"  … {detail} ({clock})"), soft_wrap=True)

            yield update

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*(Text("" if cell is None else str(cell)) for cell in row))
        if self.console.is_terminal:
            self.console.print(table)  # fits the terminal, as people read it there
            return
        # Off a terminal (a pipe, a log) a table is printed whole at its natural width,
        # even where COLUMNS asks for less: cells cut short would lose digits.
        console = self.console
        natural = Measurement.get(console, console.options.update_width(PIPE_WIDTH), table)
        width = console.width
        console.width = max(natural.maximum, width)
        try:
            console.print(table)
        finally:
            console.width = width


def key_value_table(title: str, rows: Sequence[tuple[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(Text(key), Text("" if value is None else str(value)))
    return table
