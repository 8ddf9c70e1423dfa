"""What ``server up | dns-refresh | status | down`` do, with the CLI kept out of it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rendezvous_deploy import roles
from rendezvous_deploy.aws import Aws, DeployError
from rendezvous_deploy.progress import Reporter, key_value_table
from rendezvous_deploy.server import (
    authsecret,
    balancer,
    dnscheck,
    follower,
    iam,
    image,
    network,
    record,
    replicas,
    service,
    taskdef,
)
from rendezvous_deploy.server import monitoring as cloudwatch
from rendezvous_deploy.server import tasks as ecs_tasks
from rendezvous_deploy.server.settings import ServerSettings
from rendezvous_deploy.server.teardown import delete_plan, down
from rendezvous_deploy.validate import masked_url

__all__ = ["UpResult", "delete_plan", "dns_refresh", "down", "status", "status_table", "up"]


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
    room: replicas.RedisSource | None = None,
) -> tuple[str, bool, list[str]]:
    """The latest revision when it already matches; else a newly registered one."""
    room = room or replicas.RedisSource()
    wanted = taskdef.desired(
        settings, image_uri, execution_role_arn, aws.region_name, auth_secret_arn,
        room.url, room.secret_arn,
    )
    ecs = aws.client("ecs")
    latest = service.latest_task_definition(aws, settings)
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
    for values in (old, new):  # the Redis URL may hold a password: never shown
        if taskdef.REDIS_URL_ENV in values:
            values[taskdef.REDIS_URL_ENV] = masked_url(values[taskdef.REDIS_URL_ENV])
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
    # Each mode's tasks have a group of their own: this mode's is made or reconciled
    # here, the other mode's (where the old tasks of a switch still run) is left as it
    # is until the switch is done, so no running task is cut off or exposed meanwhile.
    nlb_group = None
    if settings.replicated:  # first: the replicas' group admits 10000 only from it
        nlb_group, nlb_group_changed = balancer.ensure_group(aws, settings, vpc_id)
        reporter.step(
            f"security group {nlb_group} ({settings.balancer_name}: the load balancer's, "
            f"open on its listener ports)",
            nlb_group_changed,
        )
    group_id, sg_changed = network.ensure_security_group(
        aws, settings, vpc_id, on_change=reporter.change, balancer_group=nlb_group
    )
    reporter.step(f"security group {group_id} ({settings.task_group_name})", sg_changed)
    room = (
        replicas.redis(aws, settings, reporter, vpc_id, names, (group_id,))
        if settings.replicated
        else replicas.RedisSource()
    )
    execution_policy = iam.execution_policy(
        settings, image_uri, region, account, secret_arn, room.secret_arn
    )
    execution_arn, role_changed = iam.ensure_role(
        aws, settings.execution_role, "trust-ecs-tasks", execution_policy, boundary,
        reporter.change,
    )
    reporter.step(f"task execution role {settings.execution_role}", role_changed)
    td_arn, registered, why = ensure_task_definition(
        aws, settings, image_uri, execution_arn, reporter.change, secret_arn, room
    )
    revision = td_arn.rsplit(":", 1)[-1]
    if registered:
        reporter.step(f"registered task definition {settings.family}:{revision} "
                      f"(changed: {', '.join(why)})")
    else:
        reporter.step(f"task definition {settings.family}:{revision} unchanged", changed=False)
    cluster_arn, cluster_changed = service.ensure_cluster(aws, settings.cluster_name)
    reporter.step(f"cluster {settings.cluster_name}", cluster_changed)
    nlb = (
        replicas.ensure_balancer(aws, settings, reporter, vpc_id, names, nlb_group)
        if nlb_group is not None
        else None
    )

    # Whoever moves the record moves it only to healthy tasks of the new mode: a
    # follower left from one task would point it at a replica that starts RUNNING, so it
    # goes before the service changes; back from replicas (the record an alias), the
    # follower comes only once `up` itself has moved the record to the healthy task.
    if nlb is not None:
        replicas.remove_follower(aws, settings, reporter)
    switching_back = nlb is None and record.current_alias(aws, zone, settings.fqdn) is not None
    if nlb is None and settings.follow and not switching_back:
        _ensure_follower(aws, settings, reporter, account, cluster_arn, zone, boundary)

    before = ecs_tasks.service_tasks(aws, settings.cluster_name, settings.service_name)
    already_stopped = {t["taskArn"] for t in before if t.get("lastStatus") == "STOPPED"}
    net = service.network_configuration(settings, [s["SubnetId"] for s in subnets], group_id)
    outcome, service_changed = service.ensure_service(
        aws, settings, td_arn, net,
        balancer.service_load_balancers(settings, nlb) if nlb else None,
        force_new_deployment=room.rotated and not registered,  # tasks read it at start
    )
    reporter.step(f"service {settings.service_name} {outcome} ({settings.replicas} "
                  f"task{'s' if settings.replicated else ''})", service_changed)

    for line, changed in cloudwatch.ensure(aws, settings, account):
        reporter.step(line, changed)

    if nlb is not None:
        with reporter.waiting(
            f"Waiting for {settings.replicas} healthy replicas behind the load balancer",
            timeout=settings.waits.task_timeout,
        ) as update:
            ips = replicas.wait_for_replicas(
                aws, settings, td_arn, nlb.target_groups[settings.port], already_stopped,
                update,
            )
        reporter.step(f"{len(ips)} replicas healthy behind {settings.balancer_name}: "
                      f"{', '.join(ips)}", changed=service_changed)
        record_changed = replicas.point_record(aws, settings, reporter, zone, nlb)
        for line in network.delete_security_group(aws, settings, settings.security_group_name):
            reporter.step(f"{line} (the single task's group; the replicas run in their own)")
        reporter.note("DNS verification skipped: an alias record answers the load "
                      "balancer's addresses, which Route 53 picks")
        reporter.note(replicas.cost_note(settings))
        return UpResult(host=settings.fqdn.rstrip("."), port=settings.port, ip=nlb.dns_name,
                        task_definition_arn=td_arn, registered=registered,
                        record_changed=record_changed)

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
    if settings.follow and switching_back:  # now: the record is on the healthy task
        _ensure_follower(aws, settings, reporter, account, cluster_arn, zone, boundary)
    for line in replicas.remove_parts(aws, settings, wait=0):  # left from --replicas N
        reporter.step(line)
    _verify(reporter, settings, zone, ip)
    return UpResult(
        host=settings.fqdn.rstrip("."),
        port=settings.port,
        ip=ip,
        task_definition_arn=td_arn,
        registered=registered,
        record_changed=record_changed,
    )


def _ensure_follower(
    aws: Aws,
    settings: ServerSettings,
    reporter: Reporter,
    account: str,
    cluster_arn: str,
    zone: record.Zone,
    boundary: str,
) -> None:
    changed = follower.ensure(
        aws, settings, account=account, cluster_arn=cluster_arn, zone_id=zone.id,
        boundary=boundary, on_change=reporter.change,
    )
    reporter.step(
        f"record follows the task: rule {settings.refresher_rule} -> function "
        f"{settings.refresher_function}",
        changed,
    )


def dns_refresh(aws: Aws, settings: ServerSettings, reporter: Reporter) -> record.RefreshResult:
    zone = record.check_inside(record.find_zone(aws, settings.record, settings.zone),
                                settings.fqdn)
    alias = record.current_alias(aws, zone, settings.fqdn)
    if alias is not None:
        raise DeployError(
            f"{settings.fqdn} is an alias to the load balancer {alias[0]} (--replicas): it "
            f"needs no refresh, and pointing it at one task would bypass the others. Run "
            f"`server up` without --replicas to go back to one task"
        )
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
    alias = None
    if settings.record:
        zone = record.check_inside(
            record.find_zone(aws, settings.record, settings.zone), settings.fqdn
        )
        zone_text = f"{zone.name} ({zone.id})"
        found = record.current_a(aws, zone, settings.fqdn)
        values = found[0] if found else []
        alias = record.current_alias(aws, zone, settings.fqdn)
    nlb = balancer.find_balancer(aws, settings)
    matches = "yes" if ip and values == [ip] else "no" if settings.record else ""
    if alias is not None:
        values = [f"alias to {alias[0]}"]
        nlb_name = (nlb or {}).get("DNSName", "").lower().rstrip(".") + "."
        matches = "yes (alias to the load balancer)" if alias[0] == nlb_name else "no"
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
        "load balancer": _balancer_text(aws, settings, nlb),
        "record": settings.fqdn if settings.record else "(no --record)",
        "zone": zone_text,
        "record value": ", ".join(values) or "(none)",
        "record matches task": matches,
        "last stop reason": (stopped.get("stoppedReason") or "") if stopped else "",
        "log group": settings.log_group,
        **cloudwatch.last_hour(aws, settings),
    }


def _balancer_text(aws: Aws, settings: ServerSettings, nlb: dict[str, Any] | None) -> str:
    if nlb is None:
        return "none (one task; --replicas N puts N behind one)"
    group = balancer.find_target_group(aws, settings.rendezvous_target_group)
    healthy = len(balancer.healthy_targets(aws, group["TargetGroupArn"])) if group else 0
    return f"{nlb['DNSName']} ({healthy} healthy target(s) on {settings.port})"


def status_table(values: dict[str, Any]) -> Any:
    return key_value_table("rendezvous server", list(values.items()))
