"""`rendezvous-deploy server policy` prints the deployer policy filled in, offline."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from rendezvous_deploy.cli import main
from tests.deploy.policyscan import checked_statements, resource_allows


def run(*args: str):
    return CliRunner().invoke(main, ["server", "policy", *args])


def test_prints_a_complete_policy_for_the_given_names():
    result = run(
        "--account",
        "123456789012",
        "--region",
        "eu-west-1",
        "--name",
        "team-a",
        "--hosted-zone-id",
        "/hostedzone/Z0ABC",
        "--record",
        "Rdv.Example.com.",
    )
    assert result.exit_code == 0, result.output
    assert "${" not in result.output
    document = json.loads(result.output)
    checked_statements(document)
    text = json.dumps(document)
    assert "arn:aws:route53:::hostedzone/Z0ABC" in text
    assert '"rdv.example.com"' in text  # normalised as Route 53 compares names
    assert resource_allows(
        document, "ecs:CreateCluster", "arn:aws:ecs:eu-west-1:123456789012:cluster/team-a"
    )
    assert not resource_allows(
        document, "ecs:CreateCluster", "arn:aws:ecs:eu-west-1:123456789012:cluster/other"
    )


def test_a_bad_account_id_is_refused_with_the_reason():
    result = run(
        "--account",
        "12345",
        "--region",
        "eu-west-1",
        "--hosted-zone-id",
        "Z0ABC",
        "--record",
        "rdv.example.com",
    )
    assert result.exit_code == 2
    assert "not a 12-digit account id" in result.output


GOOD = {
    "--account": "123456789012",
    "--region": "eu-west-1",
    "--name": "team-a",
    "--hosted-zone-id": "Z0ABC",
    "--record": "rdv.example.com",
}


@pytest.mark.parametrize(
    ("option", "value"),
    [
        ("--name", "*"),
        ("--name", "team-*"),
        ("--region", "*"),
        ("--region", "eu-west-?"),
        ("--hosted-zone-id", "*"),
        ("--record", "*.example.com"),
    ],
)
def test_a_wildcard_never_widens_the_printed_policy(option: str, value: str) -> None:
    """Each value lands in ARNs and conditions: a '*' or '?' would grant the deployer
    every role, region, zone or record; refused, naming the option."""
    args = [x for key, good in GOOD.items() for x in (key, value if key == option else good)]
    result = run(*args)
    assert result.exit_code == 2, result.output
    assert option in result.output
    assert '"Statement"' not in result.output
