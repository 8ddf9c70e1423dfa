"""A switch between one task and replicas moves the service to the other mode's security
group and never narrows or widens a group a task still runs in: the single task's group
stays open to all (it reads no PROXY header), the replicas' group never admits the world
on the rendezvous port (they trust the PROXY header). Against a moto server process with
the fake Fargate of tests/deploy/world.py, watched from a thread while `up` runs.

moto does not enforce what AWS does with security groups: it deletes a group that a
network interface or another group's rule still names, and does not filter traffic by
group references at all. So these tests check the rules and the groups each task is in,
and the order in which `up` removes groups (what AWS would refuse), not reachability.
"""

from __future__ import annotations

from io import StringIO
from typing import Any

from rich.console import Console

from rendezvous_deploy.progress import Reporter
from rendezvous_deploy.server import commands, network
from tests.deploy.conftest import Stack
from tests.deploy.world import _Background, clients

MUTATING = ("Create", "Register", "Update", "Put", "Change", "Authorize", "Add", "Delete")
MUTATING += ("Modify", "Set", "Revoke")
GIVEN_URL = "redis://:s3cret@10.0.0.5:6379/0"  # no cache: the groups can go at once
WORLD_ON_RENDEZVOUS = (10000, "0.0.0.0/0")

Rules = frozenset[tuple[int, str]]


def rules_of(group: dict[str, Any]) -> Rules:
    found = set()
    for permission in group["IpPermissions"]:
        for source in permission.get("IpRanges", []):
            found.add((permission["FromPort"], source["CidrIp"]))
        for pair in permission.get("UserIdGroupPairs", []):
            found.add((permission["FromPort"], pair["GroupId"]))
    return frozenset(found)


class Watch(_Background):
    """Samples, every 50 ms: each group's rules, and each running task's group, rules
    and whether it reads PROXY headers (its task definition's environment)."""

    interval = 0.05

    def __init__(self, endpoint: str) -> None:
        self.aws = clients(endpoint)
        self.groups: list[dict[str, Rules]] = []  # group name -> rules, per sample
        self.tasks: list[tuple[str, bool, str, Rules | None]] = []  # arn, proxy, group, rules
        self.unreached: list[tuple[str, str]] = []  # (task, group) the cache did not admit
        self._proxy: dict[str, bool] = {}

    def _reads_proxy(self, definition: str) -> bool:
        if definition not in self._proxy:
            found = self.aws["ecs"].describe_task_definition(taskDefinition=definition)
            env = found["taskDefinition"]["containerDefinitions"][0].get("environment", [])
            self._proxy[definition] = {"name": "RENDEZVOUS_PROXY_PROTOCOL", "value": "1"} in env
        return self._proxy[definition]

    def step(self) -> None:
        ec2, ecs = self.aws["ec2"], self.aws["ecs"]
        groups = {g["GroupId"]: g for g in ec2.describe_security_groups()["SecurityGroups"]}
        self.groups.append({g["GroupName"]: rules_of(g) for g in groups.values()})
        by_name = {g["GroupName"]: g for g in groups.values()}
        cache = by_name.get("rendezvous-cache")
        cache_sources = {source for _port, source in rules_of(cache)} if cache else None
        try:
            arns = ecs.list_tasks(cluster="rendezvous", serviceName="rendezvous")["taskArns"]
        except ecs.exceptions.ClusterNotFoundException:
            return
        if not arns:
            return
        for task in ecs.describe_tasks(cluster="rendezvous", tasks=arns)["tasks"]:
            if task["lastStatus"] != "RUNNING":
                continue
            eni = next(
                d["value"]
                for d in task["attachments"][0]["details"]
                if d["name"] == "networkInterfaceId"
            )
            found = ec2.describe_network_interfaces(NetworkInterfaceIds=[eni])
            (group_id,) = [g["GroupId"] for g in found["NetworkInterfaces"][0]["Groups"]]
            group = groups.get(group_id)
            reads_proxy = self._reads_proxy(task["taskDefinitionArn"])
            if reads_proxy and cache_sources is not None and group_id not in cache_sources:
                self.unreached.append((task["taskArn"], group_id))
            self.tasks.append(
                (
                    task["taskArn"],
                    reads_proxy,
                    group["GroupName"] if group else f"{group_id} (deleted)",
                    rules_of(group) if group else None,
                )
            )


def capturing() -> tuple[Reporter, StringIO]:
    out = StringIO()
    return Reporter(Console(file=out, force_terminal=False, width=1000, highlight=False)), out


def service_groups(stack: Stack) -> list[str]:
    ecs = clients(stack.endpoint)["ecs"]
    (found,) = ecs.describe_services(cluster="rendezvous", services=["rendezvous"])["services"]
    return list(found["networkConfiguration"]["awsvpcConfiguration"]["securityGroups"])


def group_ids(stack: Stack) -> dict[str, str]:
    found = clients(stack.endpoint)["ec2"].describe_security_groups()["SecurityGroups"]
    return {g["GroupName"]: g["GroupId"] for g in found}


def mutations(actions: set[str]) -> list[str]:
    return sorted(a for a in actions if a.split(":")[1].startswith(MUTATING))


def line_of(shown: str, text: str) -> int:
    lines = shown.splitlines()
    return next(i for i, line in enumerate(lines) if text in line)


def test_one_to_three_to_one_keeps_each_task_in_its_own_unchanged_group(stack: Stack) -> None:
    vpc_cidr = clients(stack.endpoint)["ec2"].describe_vpcs(
        Filters=[{"Name": "is-default", "Values": ["true"]}]
    )["Vpcs"][0]["CidrBlock"]
    public = frozenset({WORLD_ON_RENDEZVOUS, (10001, vpc_cidr), (10002, "0.0.0.0/0")})
    single, three = stack.settings(), stack.settings(replicas=3, redis_url=GIVEN_URL)
    with stack.fargate(), stack.propagation(), Watch(stack.endpoint) as watch:
        commands.up(stack.aws(), single, Reporter(quiet=True))
        ids = group_ids(stack)
        assert service_groups(stack) == [ids["rendezvous-server"]]
        assert "rendezvous-replicas" not in ids

        reporter, out = capturing()
        commands.up(stack.aws(), three, reporter)
        to_three = out.getvalue()
        ids = group_ids(stack)
        assert service_groups(stack) == [ids["rendezvous-replicas"]]
        assert "rendezvous-server" not in ids  # no task uses it now: removed

        aws = stack.aws()
        commands.up(aws, three, Reporter(quiet=True))
        assert mutations(aws.actions) == []  # second up: nothing to do

        reporter, out = capturing()
        commands.up(stack.aws(), single, reporter)
        back = out.getvalue()
        ids = group_ids(stack)
        assert service_groups(stack) == [ids["rendezvous-server"]]
        assert not {"rendezvous-replicas", "rendezvous-nlb"} & set(ids)

        aws = stack.aws()
        commands.up(aws, single, Reporter(quiet=True))
        assert mutations(aws.actions) == []

    # The single task's group, whenever it existed, had exactly its public rules (or
    # none, between its creation and its one AuthorizeSecurityGroupIngress, before any
    # task); the replicas' group never admitted the world on the rendezvous port.
    assert watch.groups
    for sample in watch.groups:
        assert sample.get("rendezvous-server", public) in (public, frozenset())
        assert WORLD_ON_RENDEZVOUS not in sample.get("rendezvous-replicas", frozenset())
    # Each task: one group, whose rules never changed while it ran; one that reads PROXY
    # headers never reachable from the world on 10000, the single task always.
    seen: dict[str, set[tuple[str, Rules | None]]] = {}
    for arn, proxy, group, rules in watch.tasks:
        seen.setdefault(arn, set()).add((group, rules))
        assert rules is not None, f"task {arn} ran in a deleted group {group}"
        assert (WORLD_ON_RENDEZVOUS in rules) is not proxy, (arn, group, sorted(rules))
        assert group == ("rendezvous-replicas" if proxy else "rendezvous-server")
    assert all(len(views) == 1 for views in seen.values()), seen
    assert {proxy for _arn, proxy, _group, _rules in watch.tasks} == {True, False}

    # The order: the follower goes before the service turns to replicas (it would point
    # the record at a replica starting up) and the record moves once they are healthy;
    # back, the record moves to the healthy task before a follower is made again.
    assert line_of(to_three, "needs no follower") < line_of(to_three, "service rendezvous updated")
    assert line_of(to_three, "replicas healthy behind") < line_of(to_three, "A alias")
    assert line_of(to_three, "A alias") < line_of(to_three, "(rendezvous-server)")
    assert "removed security group" in to_three.splitlines()[line_of(to_three, "-server)")]
    assert line_of(back, "running and healthy at") < line_of(back, "(TTL 60) INSYNC")
    assert line_of(back, "(TTL 60) INSYNC") < line_of(back, "record follows the task")
    assert line_of(back, "(TTL 60) INSYNC") < line_of(back, "(rendezvous-replicas)")


def test_a_group_left_in_use_goes_with_a_later_up_or_down_delete(stack: Stack) -> None:
    """On AWS the old mode's group cannot go while a stopped task's network interface
    holds it (minutes): it is kept with a message and a later `up` removes it. moto
    deletes at once, so the leftover is made by hand here, as a failed delete leaves it."""
    two = stack.settings(replicas=2, redis_url=GIVEN_URL)
    ec2 = clients(stack.endpoint)["ec2"]
    with stack.fargate(), stack.propagation():
        commands.up(stack.aws(), two, Reporter(quiet=True))
        vpc = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"][0]
        left = ec2.create_security_group(
            GroupName="rendezvous-server",
            Description="left from the single task",
            VpcId=vpc["VpcId"],
            TagSpecifications=[
                {
                    "ResourceType": "security-group",
                    "Tags": [{"Key": network.MANAGED_BY_TAG, "Value": network.MANAGED_BY}],
                }
            ],
        )["GroupId"]
        reporter, out = capturing()
        commands.up(stack.aws(), two, reporter)
    assert f"removed security group {left} (rendezvous-server) (the single" in out.getvalue()
    assert "rendezvous-server" not in group_ids(stack)

    reporter, out = capturing()
    commands.down(stack.aws(), two, reporter, delete=True, remove_record=True)
    shown = out.getvalue()
    assert "removed security group" in shown.splitlines()[line_of(shown, "(rendezvous-replicas)")]
    assert not {"rendezvous-replicas", "rendezvous-nlb", "rendezvous-server"} & set(
        group_ids(stack)
    )


def group_rules_by_name(stack: Stack) -> dict[str, Rules]:
    found = clients(stack.endpoint)["ec2"].describe_security_groups()["SecurityGroups"]
    return {g["GroupName"]: rules_of(g) for g in found}
