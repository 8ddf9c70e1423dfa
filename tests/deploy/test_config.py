"""Options come from TOML, environment and flags, flags strongest; mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from rendezvous_deploy.cli import main
from tests.deploy.conftest import Stack
from tests.deploy.world import clients


def status(args: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(main, ["server", "status", *args], env=env or {})
    return result.exit_code, result.output


def write_config(tmp_path: Path, stack: Stack, extra: str = "") -> Path:
    path = tmp_path / "rendezvous.toml"
    path.write_text(
        f'[aws]\nendpoint-url = "{stack.endpoint}"\nregion = "us-east-1"\n\n'
        f'[server]\nname = "from-file"\nrecord = "{stack.record}"\n'
        f'dns-server = ["{stack.nsd.address}"]\nadmin-cidr = "203.0.113.0/24"\n{extra}'
    )
    return path


def test_file_then_env_then_flag(stack: Stack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("COLUMNS", "200")
    config = write_config(tmp_path, stack)
    code, out = status(["--config", str(config)])
    assert code == 0, out
    assert "from-file" in out and stack.record in out and "absent" in out

    code, out = status(["--config", str(config)], env={"RENDEZVOUS_DEPLOY_NAME": "from-env"})
    assert code == 0, out
    assert "from-env" in out and "from-file" not in out

    code, out = status(
        ["--config", str(config), "--name", "from-flag"],
        env={"RENDEZVOUS_DEPLOY_NAME": "from-env"},
    )
    assert code == 0, out
    assert "from-flag" in out and "from-env" not in out

    code, out = status([], env={"RENDEZVOUS_DEPLOY_CONFIG": str(config)})
    assert code == 0, out
    assert "from-file" in out


def test_unknown_key_and_bad_toml_are_named(stack: Stack, tmp_path: Path) -> None:
    config = write_config(tmp_path, stack, extra="colour = 'blue'\n")
    code, out = status(["--config", str(config)])
    assert code == 2
    assert "unknown key(s) colour in [server]" in out
    config.write_text("[server\n")
    code, out = status(["--config", str(config)])
    assert code == 2 and "is not valid TOML" in out
    code, out = status(["--config", str(tmp_path / "missing.toml")])
    assert code == 2 and "missing.toml" in out


def test_up_without_record_is_a_usage_error(aws_env: str) -> None:
    result = CliRunner().invoke(main, ["server", "up", "--endpoint-url", aws_env])
    assert result.exit_code == 2
    assert "--record is required" in result.output


def test_deploy_errors_exit_1_with_one_line(stack: Stack) -> None:
    result = CliRunner().invoke(
        main, ["server", "dns-refresh", *stack.cli_args()], env={"COLUMNS": "200"}
    )
    assert result.exit_code == 1
    assert "Error: service rendezvous has no running task" in result.output
    assert "Traceback" not in result.output


def test_up_takes_config_file_and_opens_http_port_only_to_admin_cidr(
    stack: Stack, tmp_path: Path
) -> None:
    config = write_config(tmp_path, stack).read_text().replace('"from-file"', '"rendezvous"')
    path = tmp_path / "up.toml"
    path.write_text(config + 'image-uri = "example/rendezvous:1"\npoll-interval = 0.05\n')
    with stack.fargate() as fargate, stack.propagation():
        result = CliRunner().invoke(
            main, ["server", "up", "--config", str(path)], env={"COLUMNS": "200"}
        )
    assert result.exit_code == 0, result.output
    assert result.output.strip().splitlines()[-1] == f"{stack.record}:10000"
    assert fargate.started
    ec2 = clients(stack.endpoint)["ec2"]
    (group,) = ec2.describe_security_groups(
        Filters=[{"Name": "group-name", "Values": ["rendezvous-server"]}]
    )["SecurityGroups"]
    rules = {(p["FromPort"], r["CidrIp"]) for p in group["IpPermissions"] for r in p["IpRanges"]}
    # the rendezvous and NAT-discovery ports to every client, HTTP to the admin CIDR only
    assert rules == {(10000, "0.0.0.0/0"), (10002, "0.0.0.0/0"), (10001, "203.0.113.0/24")}


def test_ecr_repository_is_created_once(aws_env: str) -> None:
    from rendezvous_deploy.aws import Aws
    from rendezvous_deploy.server.image import ensure_repository

    aws = Aws(endpoint_url=aws_env)
    uri, created = ensure_repository(aws, "rendezvous")
    again, created_again = ensure_repository(aws, "rendezvous")
    assert created and not created_again and uri == again
    assert uri.endswith("/rendezvous")
