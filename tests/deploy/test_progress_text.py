"""Progress lines and tables print values as they are: ARNs, AWS messages and user
values may hold text that rich would read as emoji codes or markup."""

from __future__ import annotations

import pytest

from rendezvous_deploy.progress import Reporter, key_value_table, make_console

ARN = "arn:aws:secretsmanager:us-east-1:123456789012:secret:rendezvous/rendezvous/redis-url-abc"
TEXTS = [ARN, "task environment FOO: [bold]x[/bold] -> [/oops]", "stopped: [red]OutOfMemory"]


@pytest.mark.parametrize("text", TEXTS)
def test_a_step_prints_its_text_verbatim(text: str, capsys: pytest.CaptureFixture[str]) -> None:
    reporter = Reporter()
    reporter.step(text)
    reporter.step(text, changed=False)
    reporter.note(text)
    reporter.warn(text)
    reporter.fail(text)
    reporter.change("what", text, text)
    with reporter.waiting(text) as update:
        update(text)
    lines = capsys.readouterr().err.splitlines()
    assert len([line for line in lines if text in line]) >= 7, lines


def test_a_table_prints_its_cells_verbatim(capsys: pytest.CaptureFixture[str]) -> None:
    make_console().print(key_value_table("t", [("secret", ARN), ("reason", TEXTS[2])]))
    Reporter().table("t", ["a", "b"], [[ARN, TEXTS[1]]])
    err = capsys.readouterr().err
    assert ARN in err and TEXTS[2] in err and TEXTS[1] in err
