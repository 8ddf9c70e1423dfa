"""``server up --replicas N``: the steps that differ from the single task's.

N tasks of one task definition sit behind a network load balancer (balancer.py) and share
their room in Redis (--redis-url, or the ElastiCache cache.py makes). The record is an
alias A record to the NLB, so no follower has to move it when tasks come and go: a
switch from one task removes the follower, a switch back removes the NLB and the cache.
The replicas run in a security group of their own (``<name>-replicas``), the single task
in ``<name>-server``: a switch moves the service to the other group and never changes
the rules of a group an old task still runs in.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rendezvous_deploy.aws import Aws, DeployError
from rendezvous_deploy.progress import Reporter
from rendezvous_deploy.server import (
    balancer,
    cache,
    follower,
    network,
    record,
    redissecret,
)
from rendezvous_deploy.server import tasks as ecs_tasks
from rendezvous_deploy.server.settings import ServerSettings
from rendezvous_deploy.validate import masked_url


@dataclass(frozen=True)
class RedisSource:
    """Where the tasks' Redis URL comes from: the ElastiCache's URL in the task
    environment, or the --redis-url secret (``rotated``: its value changed now)."""

    url: str | None = None
    secret_arn: str | None = None
    rotated: bool = False


def redis(
    aws: Aws,
    settings: ServerSettings,
    reporter: Reporter,
    vpc_id: str,
    subnet_ids: list[str],
    task_groups: tuple[str, ...],
) -> RedisSource:
    """The given --redis-url, kept in Secrets Manager (an earlier ElastiCache of ours
    goes), or our ElastiCache (an earlier --redis-url secret goes)."""
    if settings.redis_url:
        arn, changed = redissecret.ensure(aws, settings.name, settings.redis_url)
        reporter.step(
            f"Redis {masked_url(settings.redis_url)} (given; kept as the secret "
            f"{redissecret.secret_name(settings.name)}, which the tasks read)",
            changed,
        )
        for line in cache.remove(aws, settings, wait=0):
            reporter.step(f"{line} (--redis-url replaces it)")
        return RedisSource(secret_arn=arn, rotated=changed)
    if redissecret.delete(aws, settings.name):
        reporter.step(
            f"removed the secret {redissecret.secret_name(settings.name)} (no --redis-url now)"
        )
    with reporter.waiting(
        f"ElastiCache {settings.cache_name}", timeout=settings.waits.cache_timeout
    ) as update:
        url = cache.ensure(
            aws, settings, vpc_id, subnet_ids, task_groups, reporter.step, on_progress=update
        )
    return RedisSource(url=url)


def ensure_balancer(
    aws: Aws,
    settings: ServerSettings,
    reporter: Reporter,
    vpc_id: str,
    subnet_ids: list[str],
    group_id: str,
) -> balancer.Balancer:
    found, steps = balancer.ensure(aws, settings, vpc_id, subnet_ids, group_id)
    for line, changed in steps:
        reporter.step(line, changed)
    return found


def remove_follower(aws: Aws, settings: ServerSettings, reporter: Reporter) -> None:
    """The alias record follows the NLB by itself: a follower left from one task goes."""
    if not follower.present(aws, settings):
        return
    for what in follower.remove(aws, settings):
        reporter.step(f"removed {what} (the alias record needs no follower)")


def remove_parts(aws: Aws, settings: ServerSettings, wait: float) -> list[str]:
    """What replicas mode made besides the service: the NLB, the cache we made, the
    --redis-url secret, the replicas' security group and the NLB's. Groups in the order
    AWS lets them go: the cache's names the replicas' group, which names the NLB's (a
    group still named by another's rule, or held by a stopped task's network interface,
    is kept with a message; a later `up` or `down --delete` finishes it)."""
    done = balancer.remove(aws, settings)
    done += cache.remove(aws, settings, wait=wait)
    if redissecret.delete(aws, settings.name):
        done.append(f"removed the secret {redissecret.secret_name(settings.name)}")
    return done + remove_groups(aws, settings)


def remove_groups(aws: Aws, settings: ServerSettings) -> list[str]:
    """The replicas' group and the NLB's, each only once no other group names it (AWS
    refuses otherwise; moto does not check, so this order is ours to keep): the cache's
    group names the replicas', whose rules name the NLB's."""
    if network.find_group(aws, None, settings.cache_name):
        kept = [settings.replicas_group_name, settings.balancer_name]
        present = [name for name in kept if network.find_group(aws, None, name)]
        if not present:
            return []
        return [
            f"kept security group {' and '.join(present)} until the cache's group "
            f"{settings.cache_name}, which names it, is gone: a later `up` or `down "
            f"--delete` removes them (run down --delete again)"
        ]
    done = network.delete_security_group(aws, settings, settings.replicas_group_name)
    if network.find_group(aws, None, settings.replicas_group_name):
        if network.find_group(aws, None, settings.balancer_name):
            done.append(
                f"kept security group {settings.balancer_name} until "
                f"{settings.replicas_group_name}, whose rules name it, is gone"
            )
        return done
    return done + balancer.remove_group(aws, settings)


def task_private_ip(task: dict[str, Any]) -> str | None:
    """The task's private IPv4 address: its id as an ip target of the NLB."""
    for attachment in task.get("attachments", []):
        for detail in attachment.get("details", []):
            if detail.get("name") == "privateIPv4Address":
                return str(detail["value"])
    return None


def wait_for_replicas(
    aws: Aws,
    settings: ServerSettings,
    task_definition_arn: str,
    target_group_arn: str,
    ignore_stopped: set[str],
    on_progress: Callable[[str], None] = lambda _text: None,
) -> list[str]:
    """Wait until N tasks of ``task_definition_arn`` run, pass their container health
    check and are healthy targets of the NLB; their private IPs."""
    began = time.monotonic()
    wanted = settings.replicas
    while True:
        tasks = ecs_tasks.service_tasks(aws, settings.cluster_name, settings.service_name)
        ours = [t for t in tasks if t.get("taskDefinitionArn") == task_definition_arn]
        running = [t for t in ours if ecs_tasks.is_running(t)]
        unhealthy = [t for t in running if ecs_tasks.task_health(t) == "UNHEALTHY"]
        if unhealthy:
            short = unhealthy[0]["taskArn"].rsplit("/", 1)[-1]
            raise DeployError(
                f"task {short} is running but its health check is failing (GET /livez on "
                f"port {settings.http_port}): see its logs in {settings.log_group}"
            )
        healthy = [t for t in running if ecs_tasks.task_health(t) == "HEALTHY"]
        addresses = {ip for ip in map(task_private_ip, healthy) if ip}
        in_service = sorted(addresses & balancer.healthy_targets(aws, target_group_arn))
        if len(in_service) >= wanted:
            return in_service
        stopped = [
            t
            for t in ours
            if t.get("lastStatus") == "STOPPED" and t["taskArn"] not in ignore_stopped
        ]
        if stopped and not running:
            raise DeployError(ecs_tasks.stopped_message(stopped[-1]))
        state = (
            f"{len(running)} of {wanted} tasks running, {len(healthy)} healthy, "
            f"{len(in_service)} healthy behind the load balancer"
        )
        on_progress(state)
        if time.monotonic() - began > settings.waits.task_timeout:
            raise DeployError(
                f"not {wanted} healthy replicas after {settings.waits.task_timeout:.0f} s "
                f"({state}): a task that runs but is not healthy behind the NLB fails GET "
                f"/readyz on port {settings.http_port} (Redis unreachable?); see its logs in "
                f"{settings.log_group} and `rendezvous-deploy server status`"
            )
        time.sleep(settings.waits.poll)


def point_record(
    aws: Aws,
    settings: ServerSettings,
    reporter: Reporter,
    zone: record.Zone,
    found: balancer.Balancer,
) -> bool:
    """Make the record an alias to the NLB (replacing a task's A record); changed?"""
    wanted = (found.dns_name.rstrip(".").lower() + ".", found.zone_id)
    if record.current_alias(aws, zone, settings.fqdn) == wanted:
        reporter.step(f"{settings.fqdn} already an alias to {found.dns_name}", changed=False)
        return False
    change_id = record.upsert_alias(aws, zone, settings.fqdn, found.dns_name, found.zone_id)
    with reporter.waiting(
        f"Route 53 change {change_id} to become INSYNC", timeout=settings.waits.dns_timeout
    ):
        record.wait_insync(aws, change_id, settings.waits.poll, settings.waits.dns_timeout)
    reporter.step(f"{settings.fqdn} A alias {found.dns_name} ({found.zone_id}) INSYNC")
    return True


# us-east-1 list prices (USD an hour) when written, as the README's Costs bullet says.
NLB_HOUR = 0.0225
CACHE_HOUR = 0.0128
TASK_HOUR = 0.054 + 0.005  # 1 vCPU / 3 GB, and its public IPv4 address


def cost_note(settings: ServerSettings) -> str:
    """What replicas mode costs by the hour, roughly (default task size)."""
    parts = [f"the NLB ${NLB_HOUR}/h + traffic"]
    if not settings.redis_url:
        parts.append(f"the ElastiCache node ${CACHE_HOUR}/h")
    total = NLB_HOUR + (0 if settings.redis_url else CACHE_HOUR)
    if (settings.cpu, settings.memory) == (1024, 3072):
        parts.append(f"{settings.replicas} tasks ${TASK_HOUR:.3f}/h each")
        total += settings.replicas * TASK_HOUR
        sum_text = f"about ${total:.2f}/h"
    else:
        parts.append(
            f"{settings.replicas} tasks of --cpu {settings.cpu} --memory {settings.memory}"
        )
        sum_text = f"${total:.4f}/h plus the tasks"
    return (
        f"costs by the hour (us-east-1 list prices; see the README): {', '.join(parts)}: "
        f"{sum_text}. `server down` keeps the NLB and cache; `down --delete` removes them"
    )
