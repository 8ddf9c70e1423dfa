"""docker/compose.monitoring.yaml fits docker/compose.yaml and monitoring/ (files only).

The container tests run the compose example itself; here we check what would otherwise
only fail inside a container: mounts that point nowhere, a scrape target that is not the
server's service and port, a rule path that the configuration does not load.
"""

from __future__ import annotations

from pathlib import PurePosixPath

import yaml

from tests.monitoring.stack import MONITORING, ROOT

DOCKER = ROOT / "docker"


def load(name: str) -> dict:
    return yaml.safe_load((DOCKER / name).read_text())


def test_prometheus_service_mounts_the_shipped_config_and_rules() -> None:
    service = load("compose.monitoring.yaml")["services"]["prometheus"]
    mounts = {}
    for volume in service["volumes"]:
        host, container, mode = volume.split(":")
        assert mode == "ro"
        assert (DOCKER / host).resolve().exists(), f"{host} does not exist"
        mounts[container] = (DOCKER / host).resolve()
    assert mounts["/etc/prometheus/prometheus.yml"] == MONITORING / "prometheus.yml"
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    assert "--config.file=/etc/prometheus/prometheus.yml" in service["command"]
    for rule_file in config["rule_files"]:
        path = PurePosixPath(rule_file)
        assert str(path.parent) in mounts, f"{rule_file} is not under a mount"
        assert (mounts[str(path.parent)] / path.name).exists(), rule_file


def test_scrape_target_is_the_compose_server_http_port() -> None:
    base = load("compose.yaml")["services"]
    extra = load("compose.monitoring.yaml")["services"]
    assert set(base) & set(extra) == set(), "the extra file must not change existing services"
    assert extra["prometheus"]["depends_on"] == ["server"]
    container_ports = {p.rsplit(":", 1)[1] for p in base["server"]["ports"]}
    config = yaml.safe_load((MONITORING / "prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "rendezvous"  # the alert rules select job="rendezvous"
    for target in job["static_configs"][0]["targets"]:
        host, port = target.split(":")
        assert host in base and port in container_ports and port == "10001"


def test_the_config_header_names_the_compose_file_that_uses_it() -> None:
    """docker/compose.monitoring.yaml is a file of its own, on purpose not a profile."""
    header = "".join(
        line
        for line in (MONITORING / "prometheus.yml").read_text().splitlines(keepends=True)
        if line.startswith("#")
    )
    assert "docker/compose.monitoring.yaml" in header
    assert "profile" not in header
    assert "profiles" not in load("compose.yaml").get("services", {}).get("server", {})
