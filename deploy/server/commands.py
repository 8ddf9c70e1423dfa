"""What ``server up | dns-refresh | status | down`` do, with the CLI kept out of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rendezvous_deploy import roles
from rendezvous_deploy.aws import Aws, DeployError
from rendezvous_deploy.progress import Reporter, key_value_table
from rendezvous_deploy.server import (
    authsecret,
    dnscheck,
    follower,
    iam,
    image,
    network,
    record,
    service,
    taskdef,
)
from rendezvous_deploy.server import monitoring as cloudwatch
from rendezvous_deploy.server import tasks as ecs_tasks
from rendezvous_deploy.server.settings import ServerSettings


@dataclass(frozen=True)
class UpResult:
    host: str
    port: int
    ip: str
    task_definition_arn: str
    registered: bool
    record_changed: bool

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"


def _account(aws: Aws) -> str:
    return str(aws.client("sts").get_caller_identity()["Account"])


def ensure_log_group(aws: Aws, settings: ServerSettings) -> bool:
    logs = aws.client("logs")
    found = logs.describe_log_groups(logGroupNamePrefix=settings.log_group)["logGroups"]
    if any(g["logGroupName"] == settings.log_group for g in found):
        return False
    logs.create_log_group(logGroupName=settings.log_group)
    logs.put_retention_policy(
        logGroupName=settings.log_group, retentionInDays=settings.log_retention_days
    )
    return True


def ensure_task_definition(
    aws: Aws,
    settings: ServerSettings,
    image_uri: str,
    execution_role_arn: str,
    on_change: roles.Change = lambda _what, _old, _new: None,
    auth_secret_arn: str | None = None,
) -> tuple[str, bool, list[str]]:
    """The latest revision when it already matches; else a newly registered one."""
    wanted = taskdef.desired(
        settings, image_uri, execution_role_arn, aws.region_name, auth_secret_arn
    )
    ecs = aws.client("ecs")
    try:
        latest = ecs.describe_task_definition(taskDefinition=settings.family)["taskDefinition"]
    except Exception as err:
        if "ClientException" not in type(err).__name__ and "Unable to describe" not in str(err):
            raise
        latest = None
    if latest is not None and taskdef.matches(latest, wanted):
        return str(latest["taskDefinitionArn"]), False, []
    for name, before, after in environment_changes(latest, wanted) if latest else []:
        on_change(f"task environment {name}", before, after)
    why = taskdef.changed_fields(latest, wanted)
    registered = ecs.register_task_definition(**wanted)["taskDefinition"]
    return str(registered["taskDefinitionArn"]), True, why


def environment_changes(
    latest: dict[str, Any] | None, wanted: dict[str, Any]
) -> list[tuple[str, str, str]]:
    """(variable, old value, new value) for each container variable that differs."""

    def env(definition: dict[str, Any] | None) -> dict[str, str]:
        containers = (definition or {}).get("containerDefinitions") or [{}]
        return {e["name"]: e["value"] for e in containers[0].get("environment", [])}

    old, new = env(latest), env(wanted)
    return [(k, old.get(k, ""), new.get(k, "")) for k in sorted({*old, *new})
            if old.get(k) != new.get(k)]


def name_servers(settings: ServerSettings, zone: record.Zone) -> list[dnscheck.NameServer]:
    if settings.dns_servers:
        return [dnscheck.parse_server(s) for s in settings.dns_servers]
    return dnscheck.resolve_name_servers(zone.name_servers)


def _verify(reporter: Reporter, settings: ServerSettings, zone: record.Zone, ip: str) -> None:
    if not settings.verify_dns:
        reporter.note("DNS verification skipped (--no-verify-dns)")
        return
    servers = name_servers(settings, zone)
    with reporter.waiting(
        f"Asking {len(servers)} authoritative name servers", timeout=settings.waits.dns_timeout
    ) as update:
        dnscheck.verify(
            servers,
            settings.fqdn,
            ip,
            poll=settings.waits.poll,
            timeout=settings.waits.dns_timeout,
            on_progress=update,
        )
    reporter.step(
        f"authoritative {'server' if len(servers) == 1 else 'servers'} "
        f"{', '.join(map(str, servers))} answer {settings.fqdn} = {ip}"
    )


def up(aws: Aws, settings: ServerSettings, reporter: Reporter) -> UpResult:
    """Bring the service up and the record in line; changes nothing when all is in place."""
    # Checks that need no changes come first, so mistakes cost nothing.
    docker = None if settings.image_uri else image.connect_docker()
    zone = record.find_zone(aws, settings.record, settings.zone)
    zone = record.check_inside(zone, settings.fqdn)
    reporter.step(f"hosted zone {zone.name} ({zone.id}) holds {settings.fqdn}", changed=False)
    subnets = network.subnets(aws, settings)
    vpc_id = subnets[0]["VpcId"]
    names = [s["SubnetId"] for s in subnets]
    shown = ", ".join(names) if len(names) <= 3 else f"{len(names)} subnets"
    reporter.step(f"{shown} in {vpc_id}", changed=False)
    account = _account(aws)
    region = aws.region_name
    boundary = roles.check_boundary(aws, account, roles.SERVER_BOUNDARY)
    reporter.step(f"permissions boundary {boundary}", changed=False)

    if settings.image_uri:
        image_uri = settings.image_uri
        reporter.step(f"image {image_uri} (given)", changed=False)
    else:
        with reporter.waiting(f"Pushing {settings.local_image}") as update:
            image_uri = image.push_local_image(
                aws, settings, on_progress=update, docker_client=docker
            )
        reporter.step(f"pushed {settings.local_image} as {image_uri}")

    reporter.step(f"log group {settings.log_group}", ensure_log_group(aws, settings))
    secret_arn = None
    if settings.auth:
        secret_arn, secret_created = authsecret.ensure(aws, settings.name)
        reporter.step(
            f"auth secret {authsecret.secret_name(settings.name)} (the task reads it as "
            f"${authsecret.SECRET_ENV}; mint credentials with it)",
            secret_created,
        )
    else:
        reporter.warn("--no-auth: anyone who can reach the server may register any name")
    execution_policy = iam.execution_policy(settings, image_uri, region, account, secret_arn)
    execution_arn, role_changed = iam.ensure_role(
        aws, settings.execution_role, "trust-ecs-tasks", execution_policy, boundary,
        reporter.change,
    )
    reporter.step(f"task execution role {settings.execution_role}", role_changed)
    td_arn, registered, why = ensure_task_definition(
        aws, settings, image_uri, execution_arn, reporter.change, secret_arn
    )
    revision = td_arn.rsplit(":", 1)[-1]
    if registered:
        reporter.step(f"registered task definition {settings.family}:{revision} "
                      f"(changed: {', '.join(why)})")
    else:
        reporter.step(f"task definition {settings.family}:{revision} unchanged", changed=False)
    group_id, sg_changed = network.ensure_security_group(
        aws, settings, vpc_id, on_change=reporter.change
    )
    reporter.step(f"security group {group_id} ({settings.security_group_name})", sg_changed)
    cluster_arn, cluster_changed = service.ensure_cluster(aws, settings.cluster_name)
    reporter.step(f"cluster {settings.cluster_name}", cluster_changed)

    before = ecs_tasks.service_tasks(aws, settings.cluster_name, settings.service_name)
    already_stopped = {t["taskArn"] for t in before if t.get("lastStatus") == "STOPPED"}
    net = service.network_configuration(settings, [s["SubnetId"] for s in subnets], group_id)
    outcome, service_changed = service.ensure_service(aws, settings, td_arn, net)
    reporter.step(f"service {settings.service_name} {outcome}", service_changed)

    if settings.follow:
        changed = follower.ensure(
            aws, settings, account=account, cluster_arn=cluster_arn, zone_id=zone.id,
            boundary=boundary, on_change=reporter.change,
        )
        reporter.step(
            f"record follows the task: rule {settings.refresher_rule} -> function "
            f"{settings.refresher_function}",
            changed,
        )

    for line, changed in cloudwatch.ensure(aws, settings, account):
        reporter.step(line, changed)

    with reporter.waiting(
        "Waiting for a running, healthy task", timeout=settings.waits.task_timeout
    ) as update:
        task, ip = service.wait_for_task(aws, settings, td_arn, already_stopped, update)
    reporter.step(
        f"task {task['taskArn'].rsplit('/', 1)[-1]} running and healthy at {ip}",
        changed=service_changed,
    )

    current = record.current_a(aws, zone, settings.fqdn)
    record_changed = current != ([ip], settings.ttl)
    if record_changed:
        change_id = record.upsert_a(aws, zone, settings.fqdn, ip, settings.ttl)
        with reporter.waiting(
            f"Route 53 change {change_id} to become INSYNC", timeout=settings.waits.dns_timeout
        ):
            record.wait_insync(
                aws, change_id, settings.waits.poll, settings.waits.dns_timeout
            )
        reporter.step(f"{settings.fqdn} A {ip} (TTL {settings.ttl}) INSYNC")
    else:
        reporter.step(f"{settings.fqdn} already A {ip}", changed=False)
    _verify(reporter, settings, zone, ip)
    return UpResult(
        host=settings.fqdn.rstrip("."),
        port=settings.port,
        ip=ip,
        task_definition_arn=td_arn,
        registered=registered,
        record_changed=record_changed,
    )


def dns_refresh(aws: Aws, settings: ServerSettings, reporter: Reporter) -> record.RefreshResult:
    zone = record.check_inside(record.find_zone(aws, settings.record, settings.zone),
                                settings.fqdn)
    result = record.refresh(
        aws,
        cluster=settings.cluster_name,
        service=settings.service_name,
        record=settings.fqdn,
        zone=zone.id,
        ttl=settings.ttl,
        wait_poll=settings.waits.poll,
        wait_timeout=settings.waits.dns_timeout,
    )
    if result.changed:
        reporter.step(f"{settings.fqdn} A {result.ip} (was different) INSYNC")
    else:
        reporter.step(f"{settings.fqdn} already A {result.ip}: no change", changed=False)
    _verify(reporter, settings, zone, result.ip)
    return result


def status(aws: Aws, settings: ServerSettings) -> dict[str, Any]:
    """What runs and what DNS says, as one flat dict (the CLI shows it as a table)."""
    current = service.describe_service(aws, settings)
    tasks = ecs_tasks.service_tasks(aws, settings.cluster_name, settings.service_name)
    task = ecs_tasks.newest_running(tasks)
    stopped = ecs_tasks.last_stopped(tasks)
    ip = ecs_tasks.task_public_ip(aws, task) if task else None
    values: list[str] = []
    zone_text = ""
    if settings.record:
        zone = record.check_inside(
            record.find_zone(aws, settings.record, settings.zone), settings.fqdn
        )
        zone_text = f"{zone.name} ({zone.id})"
        found = record.current_a(aws, zone, settings.fqdn)
        values = found[0] if found else []
    return {
        "service": settings.service_name,
        "service status": current.get("status") if current else "absent",
        "desired / running": (
            f"{current.get('desiredCount')} / {current.get('runningCount')}" if current else ""
        ),
        "task definition": (current or {}).get("taskDefinition", "").rsplit("/", 1)[-1],
        "task": task["taskArn"].rsplit("/", 1)[-1] if task else "none running",
        "task state": task.get("lastStatus") if task else "",
        "health": ecs_tasks.task_health(task) if task else "",
        "public IP": ip or "",
        "record": settings.fqdn if settings.record else "(no --record)",
        "zone": zone_text,
        "record value": ", ".join(values) or "(none)",
        "record matches task": (
            "yes" if ip and values == [ip] else "no" if settings.record else ""
        ),
        "last stop reason": (stopped.get("stoppedReason") or "") if stopped else "",
        "log group": settings.log_group,
        **cloudwatch.last_hour(aws, settings),
    }


def status_table(values: dict[str, Any]) -> Any:
    return key_value_table("rendezvous server", list(values.items()))


def _stale_record(
    aws: Aws, settings: ServerSettings, reporter: Reporter, zone: record.Zone
) -> None:
    """Warn when the record is left behind: with the service at zero (or deleted) its
    address is that of a stopped task, which Fargate releases and AWS may hand to
    someone else's task."""
    found = record.current_a(aws, zone, settings.fqdn)
    if not found:
        reporter.step(f"record {settings.fqdn} absent", changed=False)
        return
    reporter.warn(
        f"{settings.fqdn} still points at {', '.join(found[0])}, the address of a task "
        f"that is stopping or stopped: it is released and may be given to someone else. "
        f"Run `rendezvous-deploy server down --record {settings.fqdn.rstrip('.')} "
        f"--remove-record` to delete the record (or `server up` to bring the server back)"
    )


def delete_plan(settings: ServerSettings, remove_record: bool) -> tuple[list[str], list[str]]:
    """(what ``down --delete`` deletes, what it keeps and why)."""
    deletes = [
        f"service {settings.service_name}",
        f"rule {settings.refresher_rule}, function {settings.refresher_function}, "
        f"role {settings.refresher_role}",
        f"role {settings.execution_role}",
        f"auth secret {authsecret.secret_name(settings.name)} (credentials minted from it "
        "stop working)",
        f"security group {settings.security_group_name}",
        f"task definitions {settings.family}:*",
        f"cluster {settings.cluster_name} (when nothing else runs in it)",
    ]
    if remove_record:
        deletes.append(f"record {settings.fqdn}")
    keeps = [
        f"log group {settings.log_group}: the server's logs, for a post-mortem (aws logs "
        f"delete-log-group --log-group-name {settings.log_group})",
        f"ECR repository {settings.repository}, if `up` pushed to it: your images (aws ecr "
        f"delete-repository --force --repository-name {settings.repository})",
    ]
    if not remove_record:
        keeps.append("the DNS record (pass --record NAME --remove-record)")
    return deletes, keeps


def _delete_rest(aws: Aws, settings: ServerSettings, reporter: Reporter) -> None:
    """What ``up`` made besides the service and the follower; each step tolerates absence."""
    if iam.delete_role(aws, settings.execution_role):
        reporter.step(f"removed role {settings.execution_role}")
    if authsecret.delete(aws, settings.name):
        reporter.step(f"removed auth secret {authsecret.secret_name(settings.name)}")
    for what in network.delete_security_group(aws, settings):
        reporter.step(what)
    for what in service.deregister_family(aws, settings):
        reporter.step(what)
    for what in service.delete_cluster(aws, settings):
        reporter.step(what)


def down(
    aws: Aws, settings: ServerSettings, reporter: Reporter, *, delete: bool, remove_record: bool
) -> None:
    if remove_record and not settings.record:
        raise DeployError("--remove-record needs --record NAME (nothing was changed)")
    zone = None
    if settings.record:  # found (or refused) before anything changes
        zone = record.check_inside(
            record.find_zone(aws, settings.record, settings.zone), settings.fqdn
        )
    if delete:
        deletes, keeps = delete_plan(settings, remove_record)
        reporter.note("deleting: " + "; ".join(deletes))
        reporter.note("keeping: " + "; ".join(keeps))
    ecs = aws.client("ecs")
    current = service.describe_service(aws, settings)
    if current is None:
        reporter.step(f"service {settings.service_name} absent", changed=False)
    elif delete:
        ecs.delete_service(
            cluster=settings.cluster_name, service=settings.service_name, force=True
        )
        reporter.step(f"service {settings.service_name} deleted")
    elif current.get("desiredCount") != 0:
        ecs.update_service(
            cluster=settings.cluster_name, service=settings.service_name, desiredCount=0
        )
        reporter.step(f"service {settings.service_name} scaled to 0")
    else:
        reporter.step(f"service {settings.service_name} already at 0", changed=False)
    if delete:
        for what in follower.remove(aws, settings):
            reporter.step(f"removed {what}")
        _delete_rest(aws, settings, reporter)
    for what in cloudwatch.remove(aws, settings):  # an idle service's alarms would ring
        reporter.step(f"removed {what}")
    if zone is not None and remove_record:
        removed = record.delete_a(aws, zone, settings.fqdn)
        reporter.step(f"record {settings.fqdn} {'removed' if removed else 'absent'}", removed)
    elif zone is not None:
        _stale_record(aws, settings, reporter, zone)
    else:
        reporter.note(
            "no --record given: if a DNS record points at the task, it now points at a "
            "released address; pass --record NAME --remove-record to delete it"
        )
