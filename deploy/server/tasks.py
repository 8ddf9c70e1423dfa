"""The service's ECS tasks: their state, health and public IP (boto3 only: the refresher
Lambda imports this module, so it must not need click, rich or dnspython)."""

from __future__ import annotations

from typing import Any

from rendezvous_deploy.aws import Aws, DeployError


def service_tasks(aws: Aws, cluster: str, service: str) -> list[dict[str, Any]]:
    """Every task ECS still reports for the service (running and recently stopped)."""
    ecs = aws.client("ecs")
    arns: list[str] = []
    for status in ("RUNNING", "STOPPED"):
        try:
            page = ecs.list_tasks(cluster=cluster, serviceName=service, desiredStatus=status)
        except Exception as err:
            if "ClusterNotFound" in type(err).__name__ or "ClusterNotFound" in str(err):
                return []
            raise
        arns.extend(arn for arn in page.get("taskArns", []) if arn not in arns)
    return describe_tasks(aws, cluster, arns)


def describe_tasks(aws: Aws, cluster: str, arns: list[str]) -> list[dict[str, Any]]:
    tasks: list[dict[str, Any]] = []
    for start in range(0, len(arns), 100):
        batch = arns[start : start + 100]
        tasks.extend(aws.client("ecs").describe_tasks(cluster=cluster, tasks=batch)["tasks"])
    return tasks


def task_health(task: dict[str, Any]) -> str:
    """HEALTHY, UNHEALTHY or UNKNOWN: the task's own status, else its containers'."""
    status = task.get("healthStatus")
    if status in ("HEALTHY", "UNHEALTHY"):
        return str(status)
    container_states = [c.get("healthStatus", "UNKNOWN") for c in task.get("containers", [])]
    if "UNHEALTHY" in container_states:
        return "UNHEALTHY"
    if container_states and all(s == "HEALTHY" for s in container_states):
        return "HEALTHY"
    return "UNKNOWN"


def task_eni(task: dict[str, Any]) -> str | None:
    """The network interface Fargate gave the task (awsvpc mode), if attached yet."""
    for attachment in task.get("attachments", []):
        for detail in attachment.get("details", []):
            if detail.get("name") == "networkInterfaceId":
                return str(detail["value"])
    return None


def task_public_ip(aws: Aws, task: dict[str, Any]) -> str | None:
    """The public IPv4 address of the task's ENI, or None while it has none."""
    eni = task_eni(task)
    if eni is None:
        return None
    found = aws.client("ec2").describe_network_interfaces(NetworkInterfaceIds=[eni])
    for interface in found.get("NetworkInterfaces", []):
        public = interface.get("Association", {}).get("PublicIp")
        if public:
            return str(public)
    return None


def is_running(task: dict[str, Any]) -> bool:
    return task.get("lastStatus") == "RUNNING" and task.get("desiredStatus") == "RUNNING"


def newest_running(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The most recently started running task (during a rollout two may run at once)."""
    running = [t for t in tasks if is_running(t)]
    if not running:
        return None
    return max(running, key=lambda t: str(t.get("startedAt") or t.get("createdAt") or ""))


def last_stopped(tasks: list[dict[str, Any]]) -> dict[str, Any] | None:
    stopped = [t for t in tasks if t.get("lastStatus") == "STOPPED"]
    if not stopped:
        return None
    return max(stopped, key=lambda t: str(t.get("stoppedAt") or t.get("createdAt") or ""))


def stopped_message(task: dict[str, Any]) -> str:
    """Why a task stopped, in words a user can act on."""
    reason = task.get("stoppedReason") or "no reason given"
    containers = "; ".join(
        f"{c.get('name')}: {c.get('reason') or 'exit ' + str(c.get('exitCode'))}"
        for c in task.get("containers", [])
        if c.get("reason") or c.get("exitCode")
    )
    text = f"task {task.get('taskArn', '?').rsplit('/', 1)[-1]} stopped: {reason}"
    if containers:
        text += f" ({containers})"
    pulled = " ".join([reason, containers])
    if "CannotPullContainer" in pulled or "pull image" in pulled.lower():
        image = next((c.get("image") for c in task.get("containers", []) if c.get("image")), "")
        text += (
            f". ECS could not pull the image{' ' + image if image else ''}: check that it "
            "exists (docker manifest inspect), that the task execution role may pull from its "
            "repository (`up` grants the --image-uri's ECR repository), and that the subnets "
            "reach the registry (a public IP or a NAT gateway, or VPC endpoints for ECR)"
        )
    elif "health" in reason.lower():
        text += (
            ". The container health check (GET /livez on the HTTP port) is failing: check "
            "the task's logs in CloudWatch and that the server listens on its HTTP port"
        )
    else:
        text += ". Check the task's logs in CloudWatch (log group shown by `server status`)"
    return text


def require_task(tasks: list[dict[str, Any]], service: str) -> dict[str, Any]:
    task = newest_running(tasks)
    if task is None:
        stopped = last_stopped(tasks)
        hint = f"; last {stopped_message(stopped)}" if stopped else ""
        raise DeployError(
            f"service {service} has no running task{hint}. Run `rendezvous-deploy server up`."
        )
    return task
