"""The network load balancer in front of the replicas (``server up --replicas N``).

One internet-facing NLB in the service's public subnets, a TCP listener per port, each
forwarding to a target group of target type ``ip`` (Fargate tasks are awsvpc, so ECS
registers each task's private IP). Clients must keep their own address and port or
punching breaks (and NAT discovery answers what it sees), so both ports carry them in
a header:

- ``proxy_protocol_v2.enabled`` on both target groups, and the tasks run
  ``rendezvous serve --proxy-protocol``. The header names the client's address and port
  explicitly; the server trusts only the first header of a connection, and the task's
  security group lets only the NLB's own security group (and the other replicas) reach
  the port, so no client, nor anything else in the VPC, can hand a task a header of its
  own choosing. The NLB gets its group at creation (AWS cannot add one later): an NLB
  found without it is replaced.
- the discovery port reads that header too under ``--proxy-protocol`` (answering the
  NLB's own endpoint would tell every client its NAT is port-dependent, and every link
  would be relayed); ``preserve_client_ip.enabled`` stays off on both (the header, not
  the packet's source, names the client).

Both are health-checked over HTTP on the server's ``/readyz`` (10001), which is 503 while
a replica drains or has lost Redis, so the NLB sends nothing to such a replica.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from rendezvous_deploy.aws import Aws, DeployError, error_code
from rendezvous_deploy.server import network
from rendezvous_deploy.server.network import MANAGED_BY, MANAGED_BY_TAG
from rendezvous_deploy.server.settings import ServerSettings

DRAIN_TIMEOUT = 10
"""The server's --drain-timeout default (rendezvous.settings.Settings.drain_timeout)."""
DEREGISTRATION_DELAY = 3 * DRAIN_TIMEOUT
"""Seconds a deregistered task keeps its NLB connections before ECS sends it SIGTERM:
longer than the server's drain, so the drain's last answers still reach their clients."""
HEALTH_CHECK = {
    "HealthCheckProtocol": "HTTP",
    "HealthCheckPath": "/readyz",
    "HealthCheckIntervalSeconds": 10,
    "HealthCheckTimeoutSeconds": 5,
    "HealthyThresholdCount": 2,
    "UnhealthyThresholdCount": 2,
}
_TAGS = [{"Key": MANAGED_BY_TAG, "Value": MANAGED_BY}]


@dataclass(frozen=True)
class Balancer:
    arn: str
    dns_name: str
    zone_id: str  # the NLB's canonical hosted zone, for the alias record
    target_groups: dict[int, str]  # container port -> target group ARN


def ports(settings: ServerSettings) -> dict[int, str]:
    """Port -> target group name: the rendezvous port, and discovery when it is on."""
    wanted = {settings.port: settings.rendezvous_target_group}
    if settings.discovery_port:
        wanted[settings.discovery_port] = settings.discovery_target_group
    return wanted


def attributes(settings: ServerSettings, port: int) -> dict[str, str]:
    """The target group attributes that keep each client's address and port (above):
    the same for both ports, which both read the PROXY v2 header."""
    del port  # both ports alike; kept so callers name the target group they configure
    return {
        "proxy_protocol_v2.enabled": "true",
        "preserve_client_ip.enabled": "false",
        "deregistration_delay.timeout_seconds": str(DEREGISTRATION_DELAY),
    }


def health_check(settings: ServerSettings) -> dict[str, Any]:
    return {**HEALTH_CHECK, "HealthCheckPort": str(settings.http_port)}


def _not_found(err: Exception, *codes: str) -> bool:
    return error_code(err) in codes or any(code in str(err) for code in codes)


def find_balancer(aws: Aws, settings: ServerSettings) -> dict[str, Any] | None:
    try:
        found = aws.client("elbv2").describe_load_balancers(Names=[settings.balancer_name])
    except Exception as err:
        if not _not_found(err, "LoadBalancerNotFound"):
            raise
        return None
    return dict(found["LoadBalancers"][0]) if found["LoadBalancers"] else None


def find_target_group(aws: Aws, name: str) -> dict[str, Any] | None:
    try:
        found = aws.client("elbv2").describe_target_groups(Names=[name])
    except Exception as err:
        if not _not_found(err, "TargetGroupNotFound"):
            raise
        return None
    return dict(found["TargetGroups"][0]) if found["TargetGroups"] else None


def ensure_group(aws: Aws, settings: ServerSettings, vpc_id: str) -> tuple[str, bool]:
    """The NLB's security group (named like it): its listener ports open to everyone.
    The tasks' group admits the rendezvous port only from this group."""
    return network.ensure_group(
        aws,
        vpc_id,
        settings.balancer_name,
        f"rendezvous {settings.name}: the load balancer, TCP {settings.port} public",
        lambda _vpc_cidr, _own: {("tcp", p, p, "0.0.0.0/0") for p in ports(settings)},
    )


def remove_group(aws: Aws, settings: ServerSettings) -> list[str]:
    """Delete the NLB's security group (once no task rule names it and the NLB is gone)."""
    return network.delete_security_group(aws, settings, settings.balancer_name)


def _delete_balancer(aws: Aws, lb: dict[str, Any]) -> int:
    """Delete the NLB and its listeners; how many listeners it had."""
    elbv2 = aws.client("elbv2")
    listeners = elbv2.describe_listeners(LoadBalancerArn=lb["LoadBalancerArn"])["Listeners"]
    for listener in listeners:
        elbv2.delete_listener(ListenerArn=listener["ListenerArn"])
    elbv2.delete_load_balancer(LoadBalancerArn=lb["LoadBalancerArn"])
    return len(listeners)


def _ensure_balancer(
    aws: Aws, settings: ServerSettings, subnet_ids: list[str], group_id: str
) -> tuple[dict[str, Any], bool]:
    elbv2 = aws.client("elbv2")
    current = find_balancer(aws, settings)
    ours = current is not None and (current.get("Type"), current.get("Scheme")) == (
        "network",
        "internet-facing",
    )
    if current is not None and ours and not current.get("SecurityGroups"):
        # AWS cannot add a security group to an NLB made without one: a new NLB (the
        # alias record follows it; the target groups and the service stay)
        _delete_balancer(aws, current)
        current = None
    if current is None:
        created = elbv2.create_load_balancer(
            Name=settings.balancer_name,
            Subnets=sorted(subnet_ids),
            SecurityGroups=[group_id],
            Scheme="internet-facing",
            Type="network",
            IpAddressType="ipv4",
            Tags=_TAGS,
        )
        return dict(created["LoadBalancers"][0]), True
    if current.get("Type") != "network" or current.get("Scheme") != "internet-facing":
        raise DeployError(
            f"load balancer {settings.balancer_name} exists but is {current.get('Scheme')} "
            f"{current.get('Type')}, not an internet-facing network load balancer: delete it "
            f"(aws elbv2 delete-load-balancer --load-balancer-arn "
            f"{current['LoadBalancerArn']}) or pick another --name"
        )
    if current.get("SecurityGroups") != [group_id]:
        raise DeployError(
            f"load balancer {settings.balancer_name} is in security groups "
            f"{', '.join(current['SecurityGroups'])}, not {group_id} ({settings.balancer_name}, "
            f"the only one the tasks admit): set it (aws elbv2 set-security-groups "
            f"--load-balancer-arn {current['LoadBalancerArn']} --security-groups {group_id}) "
            f"and run up again"
        )
    have = sorted(z["SubnetId"] for z in current.get("AvailabilityZones", []))
    if have != sorted(subnet_ids):
        elbv2.set_subnets(LoadBalancerArn=current["LoadBalancerArn"], Subnets=sorted(subnet_ids))
        return current, True
    return current, False


def _ensure_target_group(
    aws: Aws, settings: ServerSettings, name: str, port: int, vpc_id: str
) -> tuple[str, bool]:
    elbv2 = aws.client("elbv2")
    wanted_check = health_check(settings)
    current = find_target_group(aws, name)
    changed = False
    if current is None:
        current = elbv2.create_target_group(
            Name=name,
            Protocol="TCP",
            Port=port,
            VpcId=vpc_id,
            TargetType="ip",
            HealthCheckEnabled=True,
            Tags=_TAGS,
            **wanted_check,
        )["TargetGroups"][0]
        changed = True
    fixed = {"Protocol": "TCP", "Port": port, "VpcId": vpc_id, "TargetType": "ip"}
    wrong = {k: current.get(k) for k, v in fixed.items() if current.get(k) != v}
    if wrong:
        raise DeployError(
            f"target group {name} exists with {wrong} (wanted {fixed}), which cannot be "
            f"changed in place: delete it (aws elbv2 delete-target-group --target-group-arn "
            f"{current['TargetGroupArn']}) and run up again"
        )
    arn = str(current["TargetGroupArn"])
    if any(current.get(k) != v for k, v in wanted_check.items()):
        elbv2.modify_target_group(TargetGroupArn=arn, HealthCheckEnabled=True, **wanted_check)
        changed = True
    have = {
        a["Key"]: a["Value"]
        for a in elbv2.describe_target_group_attributes(TargetGroupArn=arn)["Attributes"]
    }
    wanted = attributes(settings, port)
    differ = [{"Key": k, "Value": v} for k, v in wanted.items() if have.get(k) != v]
    if differ:
        elbv2.modify_target_group_attributes(TargetGroupArn=arn, Attributes=differ)
        changed = True
    return arn, changed


def _ensure_listeners(aws: Aws, balancer_arn: str, groups: dict[int, str]) -> bool:
    """A TCP listener per port forwarding to its group; listeners on other ports go."""
    elbv2 = aws.client("elbv2")
    found = elbv2.describe_listeners(LoadBalancerArn=balancer_arn)["Listeners"]
    by_port = {int(listener["Port"]): listener for listener in found}
    changed = False
    for port, group_arn in sorted(groups.items()):
        action = [{"Type": "forward", "TargetGroupArn": group_arn}]
        listener = by_port.pop(port, None)
        if listener is None:
            elbv2.create_listener(
                LoadBalancerArn=balancer_arn, Protocol="TCP", Port=port, DefaultActions=action
            )
            changed = True
            continue
        targets = [a.get("TargetGroupArn") for a in listener.get("DefaultActions", [])]
        if listener.get("Protocol") != "TCP" or targets != [group_arn]:
            elbv2.modify_listener(
                ListenerArn=listener["ListenerArn"], Protocol="TCP", DefaultActions=action
            )
            changed = True
    for listener in by_port.values():  # e.g. the discovery port, turned off since
        elbv2.delete_listener(ListenerArn=listener["ListenerArn"])
        changed = True
    return changed


def ensure(
    aws: Aws, settings: ServerSettings, vpc_id: str, subnet_ids: list[str], group_id: str
) -> tuple[Balancer, list[tuple[str, bool]]]:
    """The NLB (in security group ``group_id``), its target groups (with their
    attributes) and listeners as wanted; (the balancer, a progress line and whether it
    changed for each part)."""
    steps = []
    lb, changed = _ensure_balancer(aws, settings, subnet_ids, group_id)
    steps.append(
        (
            f"network load balancer {settings.balancer_name} ({lb['DNSName']}, security "
            f"group {group_id})",
            changed,
        )
    )
    groups = {}
    for port, name in ports(settings).items():
        groups[port], changed = _ensure_target_group(aws, settings, name, port, vpc_id)
        shown = ", ".join(f"{k}={v}" for k, v in attributes(settings, port).items())
        steps.append((f"target group {name} (TCP {port}, ip targets, {shown})", changed))
    changed = _ensure_listeners(aws, lb["LoadBalancerArn"], groups)
    steps.append((f"listeners TCP {', '.join(map(str, sorted(groups)))}", changed))
    for name in {settings.rendezvous_target_group, settings.discovery_target_group} - set(
        ports(settings).values()
    ):
        steps += [(line, True) for line in _delete_target_group(aws, name)]
    balancer = Balancer(
        arn=str(lb["LoadBalancerArn"]),
        dns_name=str(lb["DNSName"]),
        zone_id=str(lb["CanonicalHostedZoneId"]),
        target_groups=groups,
    )
    return balancer, steps


def service_load_balancers(settings: ServerSettings, balancer: Balancer) -> list[dict[str, Any]]:
    """The ECS service's ``loadBalancers``: each port's target group and container port."""
    return [
        {
            "targetGroupArn": arn,
            "containerName": settings.container_name,
            "containerPort": port,
        }
        for port, arn in sorted(balancer.target_groups.items())
    ]


def healthy_targets(aws: Aws, target_group_arn: str) -> set[str]:
    """The target ids (task private IPs) the NLB reports healthy."""
    found = aws.client("elbv2").describe_target_health(TargetGroupArn=target_group_arn)
    return {
        d["Target"]["Id"]
        for d in found.get("TargetHealthDescriptions", [])
        if d.get("TargetHealth", {}).get("State") == "healthy"
    }


def _delete_target_group(aws: Aws, name: str) -> list[str]:
    group = find_target_group(aws, name)
    if group is None:
        return []
    try:
        aws.client("elbv2").delete_target_group(TargetGroupArn=group["TargetGroupArn"])
    except Exception as err:
        if not _not_found(err, "ResourceInUse"):
            raise
        return [f"kept target group {name}: still in use; run the command again in a minute"]
    return [f"removed target group {name}"]


def remove(aws: Aws, settings: ServerSettings) -> list[str]:
    """Delete the NLB (its listeners go with it) and the target groups; what happened.
    Its security group goes with ``remove_group``, once the tasks' group names it no more."""
    done = []
    lb = find_balancer(aws, settings)
    if lb is not None:
        count = _delete_balancer(aws, lb)
        done.append(
            f"removed network load balancer {settings.balancer_name} and its {count} listener(s)"
        )
    for name in (settings.rendezvous_target_group, settings.discovery_target_group):
        done += _delete_target_group(aws, name)
    return done
