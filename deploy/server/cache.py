"""The Redis the replicas share, when no --redis-url is given: a small ElastiCache.

A Valkey replication group of one cache.t4g.micro node (cluster mode off, the engine
`rendezvous serve --redis` needs), in a cache subnet group over the service's subnets,
behind its own security group that admits 6379 only from the tasks' group. A replication
group rather than a bare cache cluster because its primary endpoint is a stable name
that survives node replacement (and, later, a replica and failover). In the VPC, without
TLS or AUTH: nothing outside the tasks' group reaches it. Creating or deleting it takes
AWS 5-15 minutes, so both show progress and stop at a deadline (--cache-timeout).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rendezvous_deploy.aws import Aws, DeployError, error_code
from rendezvous_deploy.server import network
from rendezvous_deploy.server.settings import ServerSettings

ENGINE = "valkey"
NODE_TYPE = "cache.t4g.micro"
PORT = 6379
_TAGS = [{"Key": network.MANAGED_BY_TAG, "Value": network.MANAGED_BY}]


def _absent(err: Exception, code: str) -> bool:
    return error_code(err) == code or code in str(err)


def find(aws: Aws, settings: ServerSettings) -> dict[str, Any] | None:
    """The replication group ``up`` makes, or None."""
    try:
        found = aws.client("elasticache").describe_replication_groups(
            ReplicationGroupId=settings.cache_name
        )
    except Exception as err:
        if not _absent(err, "ReplicationGroupNotFoundFault"):
            raise
        return None
    groups = found.get("ReplicationGroups", [])
    return dict(groups[0]) if groups else None


def endpoint_url(group: dict[str, Any]) -> str:
    """redis://PRIMARY:PORT/0 of an available group (no password: the SG guards it)."""
    primary = group["NodeGroups"][0]["PrimaryEndpoint"]
    return f"redis://{primary['Address']}:{primary.get('Port', PORT)}/0"


def find_subnet_group(aws: Aws, settings: ServerSettings) -> dict[str, Any] | None:
    try:
        found = aws.client("elasticache").describe_cache_subnet_groups(
            CacheSubnetGroupName=settings.cache_name
        )
    except Exception as err:
        if not _absent(err, "CacheSubnetGroupNotFoundFault"):
            raise
        return None
    groups = found.get("CacheSubnetGroups", [])
    return dict(groups[0]) if groups else None


def _ensure_subnet_group(aws: Aws, settings: ServerSettings, subnet_ids: list[str]) -> bool:
    found = find_subnet_group(aws, settings)
    if found is not None:
        have = sorted(s["SubnetIdentifier"] for s in found["Subnets"])
        if have != sorted(subnet_ids):
            raise DeployError(
                f"cache subnet group {settings.cache_name} spans {', '.join(have)}, not the "
                f"service's subnets {', '.join(sorted(subnet_ids))}: run `server down "
                f"--delete` to remove the cache, or pass the same --subnet as before"
            )
        return False
    aws.client("elasticache").create_cache_subnet_group(
        CacheSubnetGroupName=settings.cache_name,
        CacheSubnetGroupDescription=f"rendezvous {settings.name}: the replicas' Redis",
        SubnetIds=sorted(subnet_ids),
        Tags=_TAGS,
    )
    return True


def ensure_group(
    aws: Aws, settings: ServerSettings, vpc_id: str, task_groups: tuple[str, ...]
) -> bool:
    """The cache's security group: 6379 from ``task_groups`` (the replicas' group),
    nothing else."""
    _group_id, changed = network.ensure_group(
        aws,
        vpc_id,
        settings.cache_name,
        f"rendezvous {settings.name}: Redis {PORT} from the server tasks only",
        lambda _vpc_cidr, _own: {("tcp", PORT, PORT, group) for group in task_groups},
    )
    return changed


def ensure(
    aws: Aws,
    settings: ServerSettings,
    vpc_id: str,
    subnet_ids: list[str],
    task_groups: tuple[str, ...],
    on_step: Callable[[str, bool], None],
    on_progress: Callable[[str], None] = lambda _text: None,
) -> str:
    """Security group, subnet group and replication group; waits until it is available
    and returns its URL for the tasks."""
    on_step(
        f"cache security group {settings.cache_name} ({PORT} from the tasks' group only)",
        ensure_group(aws, settings, vpc_id, task_groups),
    )
    on_step(
        f"cache subnet group {settings.cache_name}", _ensure_subnet_group(aws, settings, subnet_ids)
    )
    group = find(aws, settings)
    if group is not None and group.get("Status") == "deleting":
        raise DeployError(
            f"ElastiCache replication group {settings.cache_name} is being deleted (an "
            f"earlier `down --delete` or switch): run up again when it is gone (minutes), or "
            f"pass --redis-url"
        )
    if group is None:
        [sg] = network.find_group(aws, vpc_id, settings.cache_name)
        aws.client("elasticache").create_replication_group(
            ReplicationGroupId=settings.cache_name,
            ReplicationGroupDescription=f"rendezvous {settings.name}: the replicas' room",
            Engine=ENGINE,
            CacheNodeType=NODE_TYPE,
            NumCacheClusters=1,
            AutomaticFailoverEnabled=False,
            CacheSubnetGroupName=settings.cache_name,
            SecurityGroupIds=[sg["GroupId"]],
            Port=PORT,
            Tags=_TAGS,
        )
        on_step(f"ElastiCache {ENGINE} {NODE_TYPE} replication group {settings.cache_name}", True)
    group = wait_available(aws, settings, on_progress)
    url = endpoint_url(group)
    on_step(f"Redis for the replicas at {url}", False)
    return url


def wait_available(
    aws: Aws, settings: ServerSettings, on_progress: Callable[[str], None]
) -> dict[str, Any]:
    began = time.monotonic()
    timeout = settings.waits.cache_timeout
    while True:
        group = find(aws, settings)
        status = group.get("Status", "?") if group else "absent"
        if group is not None and status == "available":
            return group
        if status in ("create-failed", "absent"):
            raise DeployError(
                f"ElastiCache replication group {settings.cache_name} is {status}: see its "
                f"events (aws elasticache describe-events --source-type replication-group "
                f"--source-identifier {settings.cache_name}), then run up again"
            )
        on_progress(f"replication group {settings.cache_name} {status}")
        if time.monotonic() - began > timeout:
            raise DeployError(
                f"ElastiCache replication group {settings.cache_name} still {status} after "
                f"{timeout:.0f} s; creating one usually takes 5-15 minutes: run up again "
                f"(it goes on where this stopped), or raise --cache-timeout"
            )
        time.sleep(settings.waits.poll)


def remove(aws: Aws, settings: ServerSettings, wait: float) -> list[str]:
    """Delete the replication group, then (once it is gone, waiting up to ``wait``
    seconds) its subnet group and security group; what happened."""
    done = []
    group = find(aws, settings)
    if group is not None and group.get("Status") != "deleting":
        aws.client("elasticache").delete_replication_group(ReplicationGroupId=settings.cache_name)
        done.append(f"deleting ElastiCache replication group {settings.cache_name}")
    deadline = time.monotonic() + wait
    while group is not None and time.monotonic() < deadline:
        time.sleep(settings.waits.poll)
        group = find(aws, settings)
    if group is not None:
        return [
            *done,
            f"kept cache subnet group and security group {settings.cache_name} until the "
            f"replication group is gone (minutes): a later `up` or `down --delete` removes "
            f"them (run down --delete again)",
        ]
    if find_subnet_group(aws, settings) is not None:
        aws.client("elasticache").delete_cache_subnet_group(
            CacheSubnetGroupName=settings.cache_name
        )
        done.append(f"removed cache subnet group {settings.cache_name}")
    return done + network.delete_security_group(aws, settings, settings.cache_name)
