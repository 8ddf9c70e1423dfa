"""The Route 53 A record and the refresh that makes it equal the task's public IP.

boto3 only: the refresher Lambda runs :func:`refresh` from this module.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Any

from rendezvous_deploy.aws import Aws, DeployError
from rendezvous_deploy.server import tasks as ecs_tasks

_ZONE_ID = re.compile(r"(/hostedzone/)?[A-Z0-9]{6,}")  # ids have no dots, names do


@dataclass(frozen=True)
class Zone:
    id: str
    name: str  # with trailing dot
    name_servers: tuple[str, ...]


@dataclass(frozen=True)
class RefreshResult:
    ip: str
    changed: bool
    task_arn: str
    change_id: str | None = None


def _fqdn(name: str) -> str:
    return name.rstrip(".").lower() + "."


def find_zone(aws: Aws, record: str, zone: str = "") -> Zone:
    """The public hosted zone holding ``record``: ``zone`` (id or name) or the closest parent."""
    if not record:
        raise DeployError("no DNS record given: pass --record NAME (e.g. rdv.example.com)")
    r53 = aws.client("route53")
    fqdn = _fqdn(record)
    zone_id = zone if _ZONE_ID.fullmatch(zone) else ""
    if zone_id:
        try:
            found = r53.get_hosted_zone(Id=zone_id)
        except Exception as err:
            if "NoSuchHostedZone" in str(err):
                raise DeployError(
                    f"hosted zone {zone} not found: check --zone, or create the zone in Route 53"
                ) from err
            raise
        return check_inside(_zone_from(found), fqdn)
    candidates: dict[str, dict[str, Any]] = {}
    for page in r53.get_paginator("list_hosted_zones").paginate():
        for hz in page["HostedZones"]:
            if hz.get("Config", {}).get("PrivateZone"):
                continue
            candidates.setdefault(_fqdn(hz["Name"]), hz)
    if zone:
        hz = candidates.get(_fqdn(zone))
        if hz is None:
            raise DeployError(
                f"hosted zone {zone} not found among this account's public zones "
                f"({', '.join(sorted(candidates)) or 'none'}): check --zone or create it"
            )
        return check_inside(_zone_from(r53.get_hosted_zone(Id=hz["Id"])), fqdn)
    labels = fqdn.rstrip(".").split(".")
    for start in range(len(labels)):
        hz = candidates.get(".".join(labels[start:]) + ".")
        if hz is not None:
            return _zone_from(r53.get_hosted_zone(Id=hz["Id"]))
    raise DeployError(
        f"no public hosted zone found for {fqdn}: create one in Route 53 for its domain, "
        f"or pass --zone (zones in this account: {', '.join(sorted(candidates)) or 'none'})"
    )


def _zone_from(found: dict[str, Any]) -> Zone:
    hz = found["HostedZone"]
    servers = tuple(found.get("DelegationSet", {}).get("NameServers", []))
    return Zone(id=hz["Id"].rsplit("/", 1)[-1], name=_fqdn(hz["Name"]), name_servers=servers)


def check_inside(zone: Zone, fqdn: str) -> Zone:
    if fqdn != zone.name and not fqdn.endswith("." + zone.name):
        raise DeployError(
            f"record {fqdn} is outside the hosted zone {zone.name}: use a name ending in "
            f".{zone.name.rstrip('.')} or pass the zone that holds {fqdn}"
        )
    return zone


def a_record(aws: Aws, zone: Zone, fqdn: str) -> dict[str, Any] | None:
    """The record's A record set as Route 53 lists it (plain or alias), or None."""
    found = aws.client("route53").list_resource_record_sets(
        HostedZoneId=zone.id, StartRecordName=fqdn, StartRecordType="A", MaxItems="1"
    )
    for rrset in found.get("ResourceRecordSets", []):
        if _fqdn(rrset["Name"]) == fqdn and rrset["Type"] == "A":
            return dict(rrset)
    return None


def current_a(aws: Aws, zone: Zone, fqdn: str) -> tuple[list[str], int] | None:
    """The record's A values and TTL, or None when there is no A record (an alias
    record has no values: ([], 0))."""
    rrset = a_record(aws, zone, fqdn)
    if rrset is None:
        return None
    values = sorted(r["Value"] for r in rrset.get("ResourceRecords", []))
    return values, int(rrset.get("TTL", 0))


def current_alias(aws: Aws, zone: Zone, fqdn: str) -> tuple[str, str] | None:
    """(target DNS name, target hosted zone) of an alias A record, else None."""
    target = (a_record(aws, zone, fqdn) or {}).get("AliasTarget")
    if not target:
        return None
    return _fqdn(target["DNSName"]), str(target["HostedZoneId"])


def upsert_a(aws: Aws, zone: Zone, fqdn: str, ip: str, ttl: int) -> str:
    return _upsert(
        aws, zone, {"Name": fqdn, "Type": "A", "TTL": ttl, "ResourceRecords": [{"Value": ip}]},
        "rendezvous-deploy: point the record at the running task",
    )


def upsert_alias(aws: Aws, zone: Zone, fqdn: str, dns_name: str, target_zone: str) -> str:
    """Make the record an alias A record to a load balancer; its health decides whether
    Route 53 answers (EvaluateTargetHealth)."""
    target = {"HostedZoneId": target_zone, "DNSName": _fqdn(dns_name),
              "EvaluateTargetHealth": True}
    return _upsert(
        aws, zone, {"Name": fqdn, "Type": "A", "AliasTarget": target},
        "rendezvous-deploy: point the record at the replicas' load balancer",
    )


def _upsert(aws: Aws, zone: Zone, rrset: dict[str, Any], comment: str) -> str:
    change = aws.client("route53").change_resource_record_sets(
        HostedZoneId=zone.id,
        ChangeBatch={
            "Comment": comment,
            "Changes": [{"Action": "UPSERT", "ResourceRecordSet": rrset}],
        },
    )
    return str(change["ChangeInfo"]["Id"])


def delete_a(aws: Aws, zone: Zone, fqdn: str) -> bool:
    """Remove the A record (plain or alias); False when there was none."""
    rrset = a_record(aws, zone, fqdn)
    if rrset is None:
        return False
    if "AliasTarget" in rrset:
        rrset = {k: rrset[k] for k in ("Name", "Type", "AliasTarget")}
    else:
        rrset = {k: rrset[k] for k in ("Name", "Type", "TTL", "ResourceRecords")}
    aws.client("route53").change_resource_record_sets(
        HostedZoneId=zone.id,
        ChangeBatch={"Changes": [{"Action": "DELETE", "ResourceRecordSet": rrset}]},
    )
    return True


def wait_insync(aws: Aws, change_id: str, poll: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    r53 = aws.client("route53")
    while r53.get_change(Id=change_id)["ChangeInfo"]["Status"] != "INSYNC":
        if time.monotonic() > deadline:
            raise DeployError(
                f"Route 53 change {change_id} not INSYNC after {timeout:.0f} s; it usually "
                f"takes under a minute: run `server dns-refresh` again later"
            )
        time.sleep(poll)


def refresh(
    aws: Aws,
    *,
    cluster: str,
    service: str,
    record: str,
    zone: str = "",
    ttl: int = 60,
    task_arn: str | None = None,
    wait_poll: float | None = 2.0,
    wait_timeout: float = 120.0,
) -> RefreshResult:
    """Make the A record equal the public IP of the service's running task.

    ``task_arn`` prefers one task (the one an ECS event announced); otherwise the newest
    running task wins. No change is made when the record already holds that IP and TTL.
    ``wait_poll=None`` skips waiting for INSYNC (the Lambda does not wait).
    """
    found_zone = check_inside(find_zone(aws, record, zone), _fqdn(record))
    task = None
    if task_arn:
        described = ecs_tasks.describe_tasks(aws, cluster, [task_arn])
        task = described[0] if described and ecs_tasks.is_running(described[0]) else None
    if task is None:
        task = ecs_tasks.require_task(ecs_tasks.service_tasks(aws, cluster, service), service)
    ip = ecs_tasks.task_public_ip(aws, task)
    if ip is None:
        raise DeployError(
            f"task {task['taskArn'].rsplit('/', 1)[-1]} has no public IP on its network "
            f"interface: the service must run with assignPublicIp ENABLED in a public subnet"
        )
    fqdn = _fqdn(record)
    if current_a(aws, found_zone, fqdn) == ([ip], ttl):
        return RefreshResult(ip=ip, changed=False, task_arn=task["taskArn"])
    change_id = upsert_a(aws, found_zone, fqdn, ip, ttl)
    if wait_poll is not None:
        wait_insync(aws, change_id, wait_poll, wait_timeout)
    return RefreshResult(ip=ip, changed=True, task_arn=task["taskArn"], change_id=change_id)
