"""What a deployment of the server should look like, independent of how it was asked for."""

from __future__ import annotations

from dataclasses import dataclass, field

DEFAULT_NAME = "rendezvous"
PORT = 10000
HTTP_PORT = 10001
DISCOVERY_PORT = 10002  # NAT discovery (issue 12); 0: off
MAX_REPLICAS = 20  # a sane cap: each replica is a Fargate task; raise it knowingly


@dataclass(frozen=True)
class Waits:
    """Poll intervals and deadlines (seconds); short ones make the emulator tests fast."""

    poll: float = 5.0
    task_timeout: float = 600.0
    dns_timeout: float = 180.0
    cache_timeout: float = 1200.0  # ElastiCache takes 5-15 minutes to create or delete


@dataclass(frozen=True)
class ServerSettings:
    """Everything ``server up`` needs; names default to ``name`` so several stacks can coexist."""

    name: str = DEFAULT_NAME
    record: str = ""
    zone: str = ""
    cluster: str = ""
    image_uri: str = ""
    local_image: str = "rendezvous:latest"
    cpu: int = 1024
    memory: int = 3072
    port: int = PORT
    http_port: int = HTTP_PORT
    discovery_port: int = DISCOVERY_PORT
    admin_cidr: str = ""
    subnets: tuple[str, ...] = ()
    assign_public_ip: bool = True
    ttl: int = 60
    environment: tuple[tuple[str, str], ...] = ()
    log_retention_days: int = 14
    follow: bool = True
    dns_servers: tuple[str, ...] = ()
    verify_dns: bool = True
    # Credentials: with auth (the default) a secret in Secrets Manager, read by the task;
    # allow_v1 is the server's --allow-v1 pattern ("": v1 clients refused).
    auth: bool = True
    allow_v1: str = ""
    # Replicas (issue 16): N > 1 tasks behind a network load balancer sharing their room
    # in Redis: redis_url (secret-bearing, never shown) or, when empty, an ElastiCache
    # replication group `up` creates.
    replicas: int = 1
    redis_url: str = field(default="", repr=False)
    waits: Waits = field(default_factory=Waits)

    @property
    def cluster_name(self) -> str:
        return self.cluster or self.name

    @property
    def service_name(self) -> str:
        return self.name

    @property
    def family(self) -> str:
        return self.name

    @property
    def container_name(self) -> str:
        return "rendezvous"

    @property
    def repository(self) -> str:
        return self.name

    @property
    def log_group(self) -> str:
        return f"/ecs/{self.name}"

    @property
    def security_group_name(self) -> str:
        """The single task's group: the rendezvous and discovery ports open to all."""
        return f"{self.name}-server"

    @property
    def replicas_group_name(self) -> str:
        """The replicas' group: their ports only from the NLB's group (and each other).
        A group per mode, so a switch never narrows or widens a group a task still uses."""
        return f"{self.name}-replicas"

    @property
    def task_group_name(self) -> str:
        """The group this mode's tasks run in."""
        return self.replicas_group_name if self.replicated else self.security_group_name

    @property
    def other_task_group_name(self) -> str:
        """The other mode's group: removed once the switch is done and no task uses it."""
        return self.security_group_name if self.replicated else self.replicas_group_name

    @property
    def execution_role(self) -> str:
        return f"{self.name}-task-execution"

    @property
    def refresher_role(self) -> str:
        return f"{self.name}-dns-refresher"

    @property
    def refresher_function(self) -> str:
        return f"{self.name}-dns-refresher"

    @property
    def refresher_rule(self) -> str:
        return f"{self.name}-task-running"

    @property
    def balancer_name(self) -> str:
        """The NLB (ELBv2 names: at most 32 characters, so --name at most 27 here)."""
        return f"{self.name}-nlb"

    @property
    def rendezvous_target_group(self) -> str:
        return f"{self.name}-rdv"

    @property
    def discovery_target_group(self) -> str:
        return f"{self.name}-disc"

    @property
    def cache_name(self) -> str:
        """Replication group, cache subnet group and its security group share it."""
        return f"{self.name}-cache"

    @property
    def replicated(self) -> bool:
        return self.replicas > 1

    @property
    def fqdn(self) -> str:
        """The record name with exactly one trailing dot, lower case."""
        return self.record.rstrip(".").lower() + "."
