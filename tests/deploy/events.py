"""AWS events as EventBridge delivers them, for tests of the record refresher."""

from __future__ import annotations


def task_state_change(task_arn: str, cluster_arn: str, service: str, status: str) -> dict:
    """An "ECS Task State Change" event as EventBridge delivers it (trimmed, same shape)."""
    return {
        "version": "0",
        "id": "3317b2af-7005-947d-b652-f55e762e571a",
        "detail-type": "ECS Task State Change",
        "source": "aws.ecs",
        "account": "123456789012",
        "time": "2026-11-22T00:00:00Z",
        "region": "us-east-1",
        "resources": [task_arn],
        "detail": {
            "clusterArn": cluster_arn,
            "taskArn": task_arn,
            "group": f"service:{service}",
            "launchType": "FARGATE",
            "lastStatus": status,
            "desiredStatus": "RUNNING",
            "attachments": [{"type": "eni", "status": "ATTACHED", "details": []}],
            "containers": [{"name": "rendezvous", "lastStatus": status}],
        },
    }
