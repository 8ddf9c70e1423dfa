"""The ECS cluster and service, and waiting for a running, healthy task with a public IP."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from rendezvous_deploy.aws import Aws, DeployError
from rendezvous_deploy.server import tasks as ecs_tasks
from rendezvous_deploy.server.settings import ServerSettings


def ensure_cluster(aws: Aws, name: str) -> tuple[str, bool]:
    ecs = aws.client("ecs")
    found = ecs.describe_clusters(clusters=[name]).get("clusters", [])
    active = [c for c in found if c.get("status") == "ACTIVE"]
    if active:
        return str(active[0]["clusterArn"]), False
    return str(ecs.create_cluster(clusterName=name)["cluster"]["clusterArn"]), True


def describe_service(aws: Aws, settings: ServerSettings) -> dict[str, Any] | None:
    """The service when it exists and is not deleted."""
    try:
        found = aws.client("ecs").describe_services(
            cluster=settings.cluster_name, services=[settings.service_name]
        )
    except Exception as err:
        if "ClusterNotFound" in str(err) or "ClusterNotFound" in type(err).__name__:
            return None
        raise
    for service in found.get("services", []):
        if service.get("status") in ("ACTIVE", "DRAINING"):
            return service
    return None


def network_configuration(
    settings: ServerSettings, subnet_ids: list[str], group_id: str
) -> dict[str, Any]:
    return {
        "awsvpcConfiguration": {
            "subnets": sorted(subnet_ids),
            "securityGroups": [group_id],
            "assignPublicIp": "ENABLED" if settings.assign_public_ip else "DISABLED",
        }
    }


def _same_network(current: dict[str, Any], wanted: dict[str, Any]) -> bool:
    a = current.get("awsvpcConfiguration", {})
    w = wanted["awsvpcConfiguration"]
    return (
        sorted(a.get("subnets", [])) == w["subnets"]
        and sorted(a.get("securityGroups", [])) == sorted(w["securityGroups"])
        and a.get("assignPublicIp", "DISABLED") == w["assignPublicIp"]
    )


SINGLE_DEPLOYMENT = {"minimumHealthyPercent": 0, "maximumPercent": 200}
REPLICAS_DEPLOYMENT = {"minimumHealthyPercent": 100, "maximumPercent": 200}
"""Replicas: a deploy starts every new task first and stops old ones only once the new
ones are healthy behind the NLB, so the serving count never drops below N."""
HEALTH_CHECK_GRACE = 60
"""Seconds ECS ignores the NLB's verdict on a new task (it connects to Redis first)."""


def wanted_shape(
    settings: ServerSettings, load_balancers: list[dict[str, Any]]
) -> dict[str, Any]:
    """The service fields that differ between one task and replicas behind an NLB."""
    shape: dict[str, Any] = {
        "desiredCount": settings.replicas,
        "loadBalancers": load_balancers,
        "deploymentConfiguration": REPLICAS_DEPLOYMENT if load_balancers else SINGLE_DEPLOYMENT,
    }
    if load_balancers:
        shape["healthCheckGracePeriodSeconds"] = HEALTH_CHECK_GRACE
    return shape


def _balancers(found: list[dict[str, Any]] | None) -> list[tuple[str, str, int]]:
    return sorted(
        (b.get("targetGroupArn", ""), b.get("containerName", ""), int(b.get("containerPort", 0)))
        for b in found or []
    )


def shape_changes(current: dict[str, Any], shape: dict[str, Any]) -> dict[str, Any]:
    """The fields of ``shape`` the service does not have yet. A field the service does
    not report is not compared (DescribeServices leaves out what was never set)."""
    changes = {}
    if current.get("desiredCount") != shape["desiredCount"]:
        changes["desiredCount"] = shape["desiredCount"]
    if _balancers(current.get("loadBalancers")) != _balancers(shape["loadBalancers"]):
        changes["loadBalancers"] = shape["loadBalancers"]
    deployment = current.get("deploymentConfiguration")
    wanted = shape["deploymentConfiguration"]
    if deployment is not None and any(deployment.get(k) != v for k, v in wanted.items()):
        changes["deploymentConfiguration"] = wanted
    grace = current.get("healthCheckGracePeriodSeconds")
    if "healthCheckGracePeriodSeconds" in shape and grace not in (
        None, shape["healthCheckGracePeriodSeconds"]
    ):
        changes["healthCheckGracePeriodSeconds"] = shape["healthCheckGracePeriodSeconds"]
    if changes.get("loadBalancers"):  # joining the NLB: rolling and grace come with it
        changes["deploymentConfiguration"] = wanted
        changes["healthCheckGracePeriodSeconds"] = shape["healthCheckGracePeriodSeconds"]
    return changes


def ensure_service(
    aws: Aws,
    settings: ServerSettings,
    task_definition_arn: str,
    network: dict[str, Any],
    load_balancers: list[dict[str, Any]] | None = None,
    force_new_deployment: bool = False,
) -> tuple[str, bool]:
    """Create the service, or update it when its definition, network, count, load
    balancers or deployment configuration differ, or a new deployment is asked for (a
    secret the tasks read at start changed)."""
    ecs = aws.client("ecs")
    shape = wanted_shape(settings, load_balancers or [])
    current = describe_service(aws, settings)
    if current is not None and current.get("status") == "DRAINING":
        raise DeployError(
            f"service {settings.service_name} is still being deleted: wait a minute and rerun"
        )
    if current is None:
        ecs.create_service(
            cluster=settings.cluster_name,
            serviceName=settings.service_name,
            taskDefinition=task_definition_arn,
            launchType="FARGATE",
            networkConfiguration=network,
            propagateTags="SERVICE",
            **{k: v for k, v in shape.items() if v != []},
        )
        return "created", True
    changes = shape_changes(current, shape)
    if (
        not force_new_deployment
        and current.get("taskDefinition") == task_definition_arn
        and not changes
        and _same_network(current.get("networkConfiguration", {}), network)
    ):
        return "unchanged", False
    ecs.update_service(
        cluster=settings.cluster_name,
        service=settings.service_name,
        taskDefinition=task_definition_arn,
        desiredCount=settings.replicas,
        networkConfiguration=network,
        **{k: v for k, v in changes.items() if k != "desiredCount"},
        **({"forceNewDeployment": True} if force_new_deployment else {}),
    )
    if force_new_deployment:
        return "updated (a new deployment: the tasks read the new Redis URL)", True
    return "updated", True


def _service_events(aws: Aws, settings: ServerSettings, count: int = 3) -> str:
    """The service's latest events (ECS says there why it cannot place or start a task)."""
    service = describe_service(aws, settings) or {}
    events = [e.get("message", "") for e in service.get("events", [])[:count]]
    if not events:
        return ". The service reports no events"
    return ". The service's latest events: " + " | ".join(events)


def _last_stop(tasks: list[dict[str, Any]]) -> str:
    """Why the most recent task of the service stopped, if one did."""
    stopped = ecs_tasks.last_stopped(tasks)
    return f". Last stopped task: {ecs_tasks.stopped_message(stopped)}" if stopped else ""


def wait_for_task(
    aws: Aws,
    settings: ServerSettings,
    task_definition_arn: str,
    ignore_stopped: set[str],
    on_progress: Callable[[str], None] = lambda _text: None,
) -> tuple[dict[str, Any], str]:
    """Wait for a RUNNING, HEALTHY task of ``task_definition_arn`` that has a public IP.

    Fails early when a task of this definition stops (not one in ``ignore_stopped``,
    which were stopped before we began) or reports UNHEALTHY.
    """
    began = time.monotonic()
    deadline = began + settings.waits.task_timeout
    revision = task_definition_arn.rsplit("/", 1)[-1]
    state = f"no task of {revision} started yet"
    while True:
        tasks = ecs_tasks.service_tasks(aws, settings.cluster_name, settings.service_name)
        ours = [t for t in tasks if t.get("taskDefinitionArn") == task_definition_arn]
        running = [t for t in ours if ecs_tasks.is_running(t)]
        for task in sorted(running, key=lambda t: str(t.get("startedAt", "")), reverse=True):
            health = ecs_tasks.task_health(task)
            short = task["taskArn"].rsplit("/", 1)[-1]
            if health == "UNHEALTHY":
                raise DeployError(
                    f"task {short} is running but its health check is failing (GET /livez on "
                    f"port {settings.http_port}): see its logs in {settings.log_group}"
                )
            if health != "HEALTHY":
                state = f"task {short} running, health {health}"
                continue
            ip = ecs_tasks.task_public_ip(aws, task)
            if ip:
                return task, ip
            state = f"task {short} healthy, waiting for its public IP"
        stopped = [
            t
            for t in ours
            if t.get("lastStatus") == "STOPPED" and t["taskArn"] not in ignore_stopped
        ]
        if stopped and not running:
            raise DeployError(ecs_tasks.stopped_message(stopped[-1]))
        if not running and ours:
            state = f"task {ours[-1].get('lastStatus', '?').lower()}"
        on_progress(state)
        if time.monotonic() > deadline:
            hint = ""
            if "public IP" in state:
                hint = (
                    ": its network interface has no public IP; the subnets must route to an "
                    "internet gateway and the service must assign a public IP"
                )
            raise DeployError(
                f"no running, healthy task after {settings.waits.task_timeout:.0f} s "
                f"(waited {time.monotonic() - began:.0f} s; {state}){hint}"
                f"{_service_events(aws, settings)}{_last_stop(tasks)}. Raise --task-timeout "
                f"if the image is large, or see `rendezvous-deploy server status`"
            )
        time.sleep(settings.waits.poll)


def latest_task_definition(aws: Aws, settings: ServerSettings) -> dict[str, Any] | None:
    """The family's latest revision, or None when it has none."""
    try:
        described = aws.client("ecs").describe_task_definition(taskDefinition=settings.family)
    except Exception as err:
        if "ClientException" not in type(err).__name__ and "Unable to describe" not in str(err):
            raise
        return None
    return dict(described["taskDefinition"])


def deregister_family(aws: Aws, settings: ServerSettings) -> list[str]:
    """Deregister every revision of the family, 1 to the latest; what happened."""
    ecs = aws.client("ecs")
    latest = latest_task_definition(aws, settings)
    if latest is None:
        return []
    count = 0
    for revision in range(1, int(latest["revision"]) + 1):
        try:
            ecs.deregister_task_definition(taskDefinition=f"{settings.family}:{revision}")
            count += 1
        except Exception as err:
            if "ClientException" not in type(err).__name__:
                raise
    return [f"deregistered {count} revision(s) of task definition {settings.family}"]


def delete_cluster(aws: Aws, settings: ServerSettings) -> list[str]:
    """Delete the cluster when nothing else runs in it; say so when something does."""
    ecs = aws.client("ecs")
    found = ecs.describe_clusters(clusters=[settings.cluster_name]).get("clusters", [])
    active = [c for c in found if c.get("status") == "ACTIVE"]
    if not active:
        return []
    others = int(active[0].get("activeServicesCount", 0))
    if others:
        return [f"kept cluster {settings.cluster_name}: {others} other service(s) run in it"]
    ecs.delete_cluster(cluster=settings.cluster_name)
    return [f"removed cluster {settings.cluster_name}"]
