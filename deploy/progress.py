"""Progress lines, a spinner while waiting, and tables, all on stderr via rich.

stdout stays free for the one machine-readable result (``host:10000``), so scripts can
capture it while people watch the progress.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from rich.console import Console
from rich.table import Table


class Reporter:
    """Tells the user what is happening: done steps, waits with live status, tables."""

    def __init__(self, console: Console | None = None, quiet: bool = False) -> None:
        self.console = console or Console(stderr=True, highlight=False)
        self.quiet = quiet

    def step(self, text: str, changed: bool = True) -> None:
        """One finished step; unchanged steps are dimmed so changes stand out."""
        if self.quiet:
            return
        mark = "[green]✓[/green]" if changed else "[dim]=[/dim]"
        self.console.print(f"{mark} {text}" if changed else f"{mark} [dim]{text}[/dim]")

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"  {text}", soft_wrap=True)  # paths stay whole

    def warn(self, text: str) -> None:
        """Something looks wrong but the command goes on: say so, in yellow."""
        if not self.quiet:
            self.console.print(f"[yellow]warning:[/yellow] {text}", soft_wrap=True)

    @contextmanager
    def waiting(self, text: str) -> Iterator[Callable[[str], None]]:
        """A spinner labelled ``text``; the yielded function updates its detail line."""
        if self.quiet:
            yield lambda _detail: None
            return
        last: list[str] = []
        with self.console.status(text) as status:

            def update(detail: str) -> None:
                status.update(f"{text}: {detail}")
                if not self.console.is_terminal and detail not in last:
                    last[:] = [detail]
                    self.console.print(f"  … {detail}")

            yield update

    def table(self, title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        table = Table(title=title, title_justify="left")
        for column in columns:
            table.add_column(column)
        for row in rows:
            table.add_row(*("" if cell is None else str(cell) for cell in row))
        self.console.print(table)


def key_value_table(title: str, rows: Sequence[tuple[str, Any]]) -> Table:
    table = Table(title=title, title_justify="left", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    for key, value in rows:
        table.add_row(key, "" if value is None else str(value))
    return table
