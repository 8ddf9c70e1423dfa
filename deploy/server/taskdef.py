"""The Fargate task definition we want, and whether the latest revision already is it.

Pure functions over dicts: comparing before registering is what keeps a second ``up``
from creating a new revision.
"""

from __future__ import annotations

from typing import Any

from rendezvous_deploy.server import monitoring
from rendezvous_deploy.server.settings import ServerSettings

AUTH_SECRET_ENV = "RENDEZVOUS_AUTH_SECRET"  # rendezvous.credentials.SECRET_ENV
REDIS_URL_ENV = "RENDEZVOUS_REDIS_URL"  # may hold a password: shown masked, never logged
STOP_TIMEOUT = 30
"""Replicas: seconds ECS waits after SIGTERM before SIGKILL, above the server's 10 s drain
(balancer.DRAIN_TIMEOUT), so a replica always finishes its drain."""
LIVEZ_PROBE = (
    "import sys, urllib.request; "
    "sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:{port}/livez', timeout=4).status"
    " == 200 else 1)"
)


def desired(
    settings: ServerSettings,
    image: str,
    execution_role_arn: str,
    region: str,
    auth_secret_arn: str | None = None,
    redis_url: str | None = None,
    redis_secret_arn: str | None = None,
) -> dict[str, Any]:
    """register_task_definition keyword arguments for the server; ``auth_secret_arn``
    (None: auth off) becomes $RENDEZVOUS_AUTH_SECRET through the container's secrets.
    With replicas, the shared room is ``redis_url`` (the ElastiCache `up` made: no
    password) or, for --redis-url, the secret ``redis_secret_arn``; every connection on
    the rendezvous port comes with the NLB's PROXY v2 header, and each task advertises
    its own private IP to the others for relay forwarding (``--relay-advertise auto``)."""
    given = {key for key, _ in settings.environment}  # --env wins over our EMF defaults
    allow_v1 = [("RENDEZVOUS_ALLOW_V1", settings.allow_v1)] if settings.allow_v1 else []
    environment = sorted(
        [
            ("RENDEZVOUS_PORT", str(settings.port)),
            ("RENDEZVOUS_HTTP_PORT", str(settings.http_port)),
            ("RENDEZVOUS_DISCOVERY_PORT", str(settings.discovery_port)),
            *[(k, v) for k, v in monitoring.task_environment(settings) if k not in given],
            *allow_v1,
            *(replica_environment(redis_url, redis_secret_arn) if settings.replicated else []),
            *settings.environment,
        ]
    )
    secrets = [{"name": AUTH_SECRET_ENV, "valueFrom": auth_secret_arn}] if auth_secret_arn else []
    if redis_secret_arn:
        secrets.append({"name": REDIS_URL_ENV, "valueFrom": redis_secret_arn})
    return {
        "family": settings.family,
        "networkMode": "awsvpc",
        "requiresCompatibilities": ["FARGATE"],
        "cpu": str(settings.cpu),
        "memory": str(settings.memory),
        "executionRoleArn": execution_role_arn,
        "containerDefinitions": [
            {
                "name": settings.container_name,
                "image": image,
                "essential": True,
                "memory": settings.memory,
                "portMappings": [
                    {"containerPort": settings.port, "protocol": "tcp"},
                    {"containerPort": settings.http_port, "protocol": "tcp"},
                    *(
                        [{"containerPort": settings.discovery_port, "protocol": "tcp"}]
                        if settings.discovery_port
                        else []
                    ),
                ],
                "environment": [{"name": k, "value": v} for k, v in environment],
                "secrets": secrets,
                **({"stopTimeout": STOP_TIMEOUT} if settings.replicated else {}),
                "healthCheck": {
                    "command": [
                        "CMD",
                        "python3",
                        "-c",
                        LIVEZ_PROBE.format(port=settings.http_port),
                    ],
                    "interval": 15,
                    "timeout": 5,
                    "retries": 3,
                    "startPeriod": 15,
                },
                "logConfiguration": {
                    "logDriver": "awslogs",
                    "options": {
                        "awslogs-group": settings.log_group,
                        "awslogs-region": region,
                        "awslogs-stream-prefix": "server",
                    },
                },
            }
        ],
    }


def replica_environment(
    redis_url: str | None, redis_secret_arn: str | None
) -> list[tuple[str, str]]:
    if not redis_url and not redis_secret_arn:
        raise ValueError("replicas need a Redis URL or the secret that holds one")
    return [
        *([(REDIS_URL_ENV, redis_url)] if redis_url else []),
        ("RENDEZVOUS_PROXY_PROTOCOL", "1"),
        ("RENDEZVOUS_RELAY_ADVERTISE", "auto"),
    ]


def _normalise(value: Any, key: str = "") -> Any:
    if isinstance(value, dict):
        return {k: _normalise(v, k) for k, v in value.items()}
    if isinstance(value, list):
        items = [_normalise(v) for v in value]
        if key in ("environment", "requiresCompatibilities"):
            return sorted(items, key=repr)
        return items
    if key in ("cpu", "memory") and isinstance(value, int | str):
        return str(value)
    return value


def _covers(actual: Any, wanted: Any) -> bool:
    """True when ``actual`` holds everything in ``wanted`` (AWS adds defaults we ignore)."""
    if isinstance(wanted, dict):
        return isinstance(actual, dict) and all(
            k in actual and _covers(actual[k], v) for k, v in wanted.items()
        )
    if isinstance(wanted, list):
        return (
            isinstance(actual, list)
            and len(actual) == len(wanted)
            and all(_covers(a, w) for a, w in zip(actual, wanted, strict=True))
        )
    return actual == wanted


def _with_secrets(definition: dict[str, Any]) -> dict[str, Any]:
    """ECS leaves out an empty ``secrets``: read that as [] (so turning auth off is seen)."""
    containers = [
        {"secrets": [], **container} for container in definition.get("containerDefinitions", [])
    ]
    return {**definition, "containerDefinitions": containers}


def matches(latest: dict[str, Any] | None, wanted: dict[str, Any]) -> bool:
    """Whether the latest ACTIVE revision already is the definition we would register."""
    if latest is None or latest.get("status", "ACTIVE") != "ACTIVE":
        return False
    return _covers(_normalise(_with_secrets(latest)), _normalise(wanted))


def changed_fields(latest: dict[str, Any] | None, wanted: dict[str, Any]) -> list[str]:
    """Top-level fields that differ, to tell the user why a new revision is registered."""
    if latest is None:
        return ["(no revision yet)"]
    a, w = _normalise(_with_secrets(latest)), _normalise(wanted)
    return [k for k in w if not _covers(a.get(k), w[k])]
