"""`server up --replicas N`: N tasks behind a network load balancer, the record an alias
to it, Redis from --redis-url or an ElastiCache `up` makes; idempotent, reconciled when
N changes, removed by `down --delete`. Against a moto server process, with the fake
Fargate of tests/deploy/world.py (which also registers tasks as NLB targets, as ECS does).

moto 5.2.5 gaps, worked around here and nowhere in the code: CreateService keeps neither
deploymentConfiguration nor healthCheckGracePeriodSeconds (UpdateService keeps both, so
the switch 1 -> 3 checks them); a deleted replication group stays "deleting" forever and
DeleteCacheSubnetGroup is not implemented, so `down --delete` is seen to start the
deletion and to keep the subnet group and security group with the rerun hint.
"""

from __future__ import annotations

import json
from io import StringIO
from typing import Any

import boto3
import pytest
from rich.console import Console

from rendezvous_deploy.aws import DeployError
from rendezvous_deploy.progress import Reporter
from rendezvous_deploy.server import authsecret, balancer, commands, taskdef
from rendezvous_deploy.server.settings import Waits
from tests.deploy.conftest import Stack
from tests.deploy.world import clients

MUTATING = (
    "Create",
    "Register",
    "Update",
    "Put",
    "Change",
    "Authorize",
    "Add",
    "Delete",
    "Modify",
    "Set",
    "Revoke",
)
PASSWORD = "hunter2-s3cret"
GIVEN_URL = f"redis://:{PASSWORD}@10.0.0.5:6379/0"


def capturing() -> tuple[Reporter, StringIO]:
    out = StringIO()
    return Reporter(Console(file=out, force_terminal=False, width=1000, highlight=False)), out


def aws_clients(endpoint: str) -> dict[str, Any]:
    found = clients(endpoint)
    for name in ("lambda", "events"):
        found[name] = boto3.client(name, endpoint_url=endpoint, region_name="us-east-1")
    return found


def service(endpoint: str) -> dict[str, Any]:
    ecs = clients(endpoint)["ecs"]
    return dict(ecs.describe_services(cluster="rendezvous", services=["rendezvous"])["services"][0])


def a_record(stack: Stack) -> dict[str, Any]:
    found = clients(stack.endpoint)["route53"].list_resource_record_sets(
        HostedZoneId=stack.zone_id
    )["ResourceRecordSets"]
    (rrset,) = [r for r in found if r["Type"] == "A"]
    return dict(rrset)


def balancers(endpoint: str) -> list[dict[str, Any]]:
    return list(clients(endpoint)["elbv2"].describe_load_balancers()["LoadBalancers"])


def target_groups(endpoint: str) -> dict[str, dict[str, Any]]:
    elbv2 = clients(endpoint)["elbv2"]
    return {g["TargetGroupName"]: g for g in elbv2.describe_target_groups()["TargetGroups"]}


def group_rules(endpoint: str, name: str) -> set[tuple[int, str]]:
    (group,) = clients(endpoint)["ec2"].describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}]
    )["SecurityGroups"]
    rules = set()
    for permission in group["IpPermissions"]:
        for source in permission.get("IpRanges", []):
            rules.add((permission["FromPort"], source["CidrIp"]))
        for source in permission.get("UserIdGroupPairs", []):
            rules.add((permission["FromPort"], source["GroupId"]))
    return rules


def group_id(endpoint: str, name: str) -> str:
    (group,) = clients(endpoint)["ec2"].describe_security_groups(
        Filters=[{"Name": "group-name", "Values": [name]}]
    )["SecurityGroups"]
    return str(group["GroupId"])


def group_names(endpoint: str) -> set[str]:
    found = clients(endpoint)["ec2"].describe_security_groups()["SecurityGroups"]
    return {g["GroupName"] for g in found}


def environment(endpoint: str, arn: str) -> dict[str, str]:
    found = clients(endpoint)["ecs"].describe_task_definition(taskDefinition=arn)
    container = found["taskDefinition"]["containerDefinitions"][0]
    return {e["name"]: e["value"] for e in container["environment"]}


def test_three_replicas_behind_a_network_load_balancer(stack: Stack) -> None:
    reporter, out = capturing()
    with stack.fargate() as fargate, stack.propagation():
        result = commands.up(stack.aws(), stack.settings(replicas=3), reporter)
    aws = aws_clients(stack.endpoint)
    (nlb,) = balancers(stack.endpoint)
    assert (nlb["LoadBalancerName"], nlb["Type"], nlb["Scheme"]) == (
        "rendezvous-nlb",
        "network",
        "internet-facing",
    )
    assert result.ip == nlb["DNSName"]

    groups = target_groups(stack.endpoint)
    assert set(groups) == {"rendezvous-rdv", "rendezvous-disc"}
    for name, port in (("rendezvous-rdv", 10000), ("rendezvous-disc", 10002)):
        group = groups[name]
        assert (group["Protocol"], group["Port"], group["TargetType"]) == ("TCP", port, "ip")
        assert (
            group["HealthCheckProtocol"],
            group["HealthCheckPort"],
            group["HealthCheckPath"],
        ) == ("HTTP", "10001", "/readyz")
    attributes = {
        name: {
            a["Key"]: a["Value"]
            for a in aws["elbv2"].describe_target_group_attributes(
                TargetGroupArn=group["TargetGroupArn"]
            )["Attributes"]
        }
        for name, group in groups.items()
    }
    delay = str(balancer.DEREGISTRATION_DELAY)
    assert delay == "30"  # above the server's 10 s drain
    for name, header, preserve in (  # both read the header under --proxy-protocol
        ("rendezvous-rdv", "true", "false"),
        ("rendezvous-disc", "true", "false"),
    ):
        assert attributes[name]["proxy_protocol_v2.enabled"] == header
        assert attributes[name]["preserve_client_ip.enabled"] == preserve
        assert attributes[name]["deregistration_delay.timeout_seconds"] == delay
    listeners = aws["elbv2"].describe_listeners(LoadBalancerArn=nlb["LoadBalancerArn"])["Listeners"]
    forwards = {
        (x["Protocol"], x["Port"], x["DefaultActions"][0]["TargetGroupArn"]) for x in listeners
    }
    assert forwards == {
        ("TCP", 10000, groups["rendezvous-rdv"]["TargetGroupArn"]),
        ("TCP", 10002, groups["rendezvous-disc"]["TargetGroupArn"]),
    }

    current = service(stack.endpoint)
    assert current["desiredCount"] == 3 and len(fargate.running()) == 3
    assert sorted(
        (b["targetGroupArn"], b["containerPort"]) for b in current["loadBalancers"]
    ) == sorted((g["TargetGroupArn"], g["Port"]) for g in groups.values())

    rrset = a_record(stack)
    assert rrset["AliasTarget"]["DNSName"].rstrip(".") == nlb["DNSName"]
    assert rrset["AliasTarget"]["HostedZoneId"] == nlb["CanonicalHostedZoneId"]
    assert "ResourceRecords" not in rrset or not rrset["ResourceRecords"]

    # No follower in this mode: the alias follows the NLB by itself.
    assert aws["lambda"].list_functions()["Functions"] == []
    assert aws["events"].list_rules()["Rules"] == []

    # The ElastiCache it made: one Valkey node, in the service's subnets, 6379 from the
    # tasks' group only; its endpoint is what the tasks get.
    (cache,) = aws["elasticache"].describe_replication_groups()["ReplicationGroups"]
    assert (cache["ReplicationGroupId"], cache["Engine"], cache["CacheNodeType"]) == (
        "rendezvous-cache",
        "valkey",
        "cache.t4g.micro",
    )
    (subnet_group,) = aws["elasticache"].describe_cache_subnet_groups()["CacheSubnetGroups"]
    assert subnet_group["CacheSubnetGroupName"] == "rendezvous-cache"
    task_group = current["networkConfiguration"]["awsvpcConfiguration"]["securityGroups"][0]
    assert group_rules(stack.endpoint, "rendezvous-cache") == {(6379, task_group)}
    primary = cache["NodeGroups"][0]["PrimaryEndpoint"]
    env = environment(stack.endpoint, result.task_definition_arn)
    assert env[taskdef.REDIS_URL_ENV] == f"redis://{primary['Address']}:{primary['Port']}/0"
    assert env["RENDEZVOUS_PROXY_PROTOCOL"] == "1"
    assert env["RENDEZVOUS_RELAY_ADVERTISE"] == "auto"
    definition = aws["ecs"].describe_task_definition(taskDefinition=result.task_definition_arn)
    assert definition["taskDefinition"]["containerDefinitions"][0]["stopTimeout"] == 30

    # The NLB sits in its own group, open on its listener ports; the tasks admit the
    # rendezvous and discovery ports only from that group (never the VPC's CIDR: anything
    # else in the VPC could bring its own PROXY header) and 10000 from each other, HTTP
    # from the NLB (health checks) and the admin CIDR (default: the VPC's).
    (nlb_group,) = nlb["SecurityGroups"]
    assert group_rules(stack.endpoint, "rendezvous-nlb") == {
        (10000, "0.0.0.0/0"),
        (10002, "0.0.0.0/0"),
    }
    vpc_cidr = aws["ec2"].describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])[
        "Vpcs"
    ][0]["CidrBlock"]
    assert group_rules(stack.endpoint, "rendezvous-replicas") == {
        (10000, nlb_group),
        (10000, task_group),
        (10001, nlb_group),
        (10001, vpc_cidr),
        (10002, nlb_group),
    }
    assert group_id(stack.endpoint, "rendezvous-replicas") == task_group
    assert "rendezvous-server" not in group_names(stack.endpoint)  # the single task's
    shown = out.getvalue()
    assert "~ network load balancer rendezvous-nlb" in shown
    assert "3 replicas healthy behind rendezvous-nlb" in shown

    with stack.fargate():
        status = commands.status(stack.aws(), stack.settings(replicas=3))
    assert status["load balancer"] == f"{nlb['DNSName']} (3 healthy target(s) on 10000)"
    assert status["record value"] == f"alias to {nlb['DNSName']}."
    assert status["record matches task"] == "yes (alias to the load balancer)"


@pytest.mark.parametrize("redis_url", ["", GIVEN_URL], ids=["elasticache", "redis-url"])
def test_second_up_changes_nothing(stack: Stack, quiet: Any, redis_url: str) -> None:
    with stack.fargate(), stack.propagation():
        first = commands.up(stack.aws(), stack.settings(replicas=3, redis_url=redis_url), quiet)
        before = (balancers(stack.endpoint), target_groups(stack.endpoint))
        aws = stack.aws()
        second = commands.up(aws, stack.settings(replicas=3, redis_url=redis_url), quiet)
    mutations = sorted(a for a in aws.actions if a.split(":")[1].startswith(MUTATING))
    assert mutations == []
    assert not second.registered and not second.record_changed
    assert second.task_definition_arn == first.task_definition_arn
    assert (balancers(stack.endpoint), target_groups(stack.endpoint)) == before


def test_given_redis_url_is_a_secret_the_tasks_read_and_is_never_shown(stack: Stack) -> None:
    """--redis-url: no cache; the URL lives in Secrets Manager, the task definition names
    the secret (not the URL), the execution role may read exactly it; a changed URL is
    written and rolls the service; the password appears nowhere we print or register."""
    reporter, out = capturing()
    manager = boto3.client("secretsmanager", endpoint_url=stack.endpoint, region_name="us-east-1")
    secret = "rendezvous/rendezvous/redis-url"
    changed = GIVEN_URL.replace("10.0.0.5", "10.0.0.6")
    with stack.fargate(), stack.propagation():
        first = commands.up(stack.aws(), stack.settings(replicas=2, redis_url=GIVEN_URL), reporter)
        arn = manager.describe_secret(SecretId=secret)["ARN"]
        assert manager.get_secret_value(SecretId=secret)["SecretString"] == GIVEN_URL
        deployment = service(stack.endpoint)["deployments"][0]["id"]
        aws = stack.aws()
        second = commands.up(aws, stack.settings(replicas=2, redis_url=changed), reporter)
    assert manager.get_secret_value(SecretId=secret)["SecretString"] == changed
    assert not second.registered  # the definition names the secret, not its value ...
    assert service(stack.endpoint)["deployments"][0]["id"] != deployment  # ... so: rolled
    assert "secretsmanager:PutSecretValue" in aws.actions
    elasticache = clients(stack.endpoint)["elasticache"]
    assert elasticache.describe_replication_groups()["ReplicationGroups"] == []
    assert elasticache.describe_cache_subnet_groups()["CacheSubnetGroups"] == []
    groups = clients(stack.endpoint)["ec2"].describe_security_groups()["SecurityGroups"]
    assert "rendezvous-cache" not in {g["GroupName"] for g in groups}

    definition = clients(stack.endpoint)["ecs"].describe_task_definition(
        taskDefinition=first.task_definition_arn
    )["taskDefinition"]
    container = definition["containerDefinitions"][0]
    assert {"name": taskdef.REDIS_URL_ENV, "valueFrom": arn} in container["secrets"]
    assert taskdef.REDIS_URL_ENV not in environment(stack.endpoint, first.task_definition_arn)
    assert PASSWORD not in json.dumps(definition, default=str)
    iam = boto3.client("iam", endpoint_url=stack.endpoint, region_name="us-east-1")
    role_policy = iam.get_role_policy(
        RoleName="rendezvous-task-execution", PolicyName="rendezvous-task-execution"
    )["PolicyDocument"]
    readers = [s for s in role_policy["Statement"] if s["Sid"] == "ReadTheRedisUrlSecret"]
    assert [s["Resource"] for s in readers] == [arn]

    shown = out.getvalue()
    assert PASSWORD not in shown
    assert "Redis redis://***@10.0.0.5:6379/0 (given; kept as the secret" in shown
    assert "a new deployment: the tasks read the new Redis URL" in shown
    assert PASSWORD not in repr(stack.settings(redis_url=GIVEN_URL))

    # Back to the ElastiCache `up` makes: the secret goes, the role loses the right.
    with stack.fargate(), stack.propagation():
        commands.up(stack.aws(), stack.settings(replicas=2), Reporter(quiet=True))
    assert authsecret.find(stack.aws(), "rendezvous", secret) is None
    role_policy = iam.get_role_policy(
        RoleName="rendezvous-task-execution", PolicyName="rendezvous-task-execution"
    )["PolicyDocument"]
    assert "ReadTheRedisUrlSecret" not in {s["Sid"] for s in role_policy["Statement"]}


def test_switching_one_to_three_and_back_reconciles(stack: Stack, quiet: Any) -> None:
    aws = aws_clients(stack.endpoint)
    with stack.fargate() as fargate, stack.propagation():
        single = commands.up(stack.aws(), stack.settings(), quiet)
        assert a_record(stack)["ResourceRecords"] == [{"Value": single.ip}]
        assert [f["FunctionName"] for f in aws["lambda"].list_functions()["Functions"]] == [
            "rendezvous-dns-refresher"
        ]

        commands.up(stack.aws(), stack.settings(replicas=3), quiet)
        current = service(stack.endpoint)  # reached by UpdateService, which moto keeps
        assert current["desiredCount"] == 3 and len(current["loadBalancers"]) == 2
        assert current["deploymentConfiguration"] == {
            "minimumHealthyPercent": 100,
            "maximumPercent": 200,
        }
        assert current["healthCheckGracePeriodSeconds"] == 60
        assert "AliasTarget" in a_record(stack)
        assert aws["lambda"].list_functions()["Functions"] == []  # the follower went
        assert aws["events"].list_rules()["Rules"] == []
        assert len(fargate.running()) == 3

        back = commands.up(stack.aws(), stack.settings(), quiet)
    current = service(stack.endpoint)
    assert current["desiredCount"] == 1 and current["loadBalancers"] == []
    assert current["deploymentConfiguration"]["minimumHealthyPercent"] == 0
    assert balancers(stack.endpoint) == [] and target_groups(stack.endpoint) == {}
    assert a_record(stack)["ResourceRecords"] == [{"Value": back.ip}]
    assert [f["FunctionName"] for f in aws["lambda"].list_functions()["Functions"]] == [
        "rendezvous-dns-refresher"
    ]
    (cache,) = aws["elasticache"].describe_replication_groups()["ReplicationGroups"]
    assert cache["Status"] == "deleting"  # one task needs no Redis
    assert "RENDEZVOUS_REDIS_URL" not in environment(stack.endpoint, back.task_definition_arn)
    assert (10000, "0.0.0.0/0") in group_rules(stack.endpoint, "rendezvous-server")
    # The cache's group (kept until the replication group is gone, which in moto is
    # never) names the replicas' group, whose rules name the NLB's: both wait for it, as
    # AWS would insist (test_switching_groups_* sees them go without a cache).
    assert {"rendezvous-replicas", "rendezvous-nlb"} <= group_names(stack.endpoint)


def test_down_delete_removes_the_balancer_cache_and_record(stack: Stack, quiet: Any) -> None:
    settings = stack.settings(
        replicas=3, waits=Waits(poll=0.05, task_timeout=20, dns_timeout=10, cache_timeout=0.3)
    )
    with stack.fargate(), stack.propagation():
        commands.up(stack.aws(), settings, quiet)
    reporter, out = capturing()
    commands.down(stack.aws(), settings, reporter, delete=True, remove_record=True)
    assert balancers(stack.endpoint) == [] and target_groups(stack.endpoint) == {}
    records = clients(stack.endpoint)["route53"].list_resource_record_sets(
        HostedZoneId=stack.zone_id
    )["ResourceRecordSets"]
    assert not [r for r in records if r["Type"] == "A"]
    (cache,) = clients(stack.endpoint)["elasticache"].describe_replication_groups()[
        "ReplicationGroups"
    ]
    assert cache["Status"] == "deleting"
    shown = out.getvalue()
    assert "removed network load balancer rendezvous-nlb and its 2 listener(s)" in shown
    assert "removed target group rendezvous-rdv" in shown
    assert "deleting ElastiCache replication group rendezvous-cache" in shown
    assert "kept cache subnet group and security group rendezvous-cache" in shown
    assert "run down --delete again" in shown
    assert f"record {stack.record}. removed" in shown
    assert (
        "kept security group rendezvous-replicas and rendezvous-nlb until the cache's group "
        "rendezvous-cache, which names it, is gone" in shown
    )


def test_scaling_to_zero_keeps_the_balancer_and_says_so(stack: Stack, quiet: Any) -> None:
    with stack.fargate(), stack.propagation():
        commands.up(stack.aws(), stack.settings(replicas=2), quiet)
        with pytest.raises(DeployError, match="alias to the load balancer"):
            commands.dns_refresh(stack.aws(), stack.settings(), quiet)
        assert "AliasTarget" in a_record(stack)  # dns-refresh left it alone
        reporter, out = capturing()
        commands.down(stack.aws(), stack.settings(), reporter, delete=False, remove_record=False)
        assert service(stack.endpoint)["desiredCount"] == 0
    shown = out.getvalue()
    assert "kept the load balancer rendezvous-nlb and the cache" in shown
    assert "`down --delete` removes them" in shown
    assert f"warning: {stack.record}. is still an alias to the load balancer" in shown
    assert len(balancers(stack.endpoint)) == 1


def test_a_balancer_without_a_security_group_is_replaced(stack: Stack, quiet: Any) -> None:
    """AWS cannot add a security group to an NLB made without one, and without one the
    tasks would have to admit 10000 from the whole VPC (where anything could bring its
    own PROXY header): such an NLB (as `up` made before) is replaced, the alias follows."""
    with stack.fargate(), stack.propagation():
        commands.up(stack.aws(), stack.settings(replicas=2), quiet)
        elbv2 = clients(stack.endpoint)["elbv2"]
        (old,) = balancers(stack.endpoint)
        for listener in elbv2.describe_listeners(LoadBalancerArn=old["LoadBalancerArn"])[
            "Listeners"
        ]:
            elbv2.delete_listener(ListenerArn=listener["ListenerArn"])
        elbv2.delete_load_balancer(LoadBalancerArn=old["LoadBalancerArn"])
        bare = elbv2.create_load_balancer(
            Name="rendezvous-nlb",
            Subnets=[z["SubnetId"] for z in old["AvailabilityZones"]],
            Scheme="internet-facing",
            Type="network",
        )["LoadBalancers"][0]
        assert not bare.get("SecurityGroups")
        reporter, out = capturing()
        commands.up(stack.aws(), stack.settings(replicas=2), reporter)
    (nlb,) = balancers(stack.endpoint)
    assert nlb["LoadBalancerArn"] != bare["LoadBalancerArn"]
    assert nlb["SecurityGroups"] == [old["SecurityGroups"][0]]
    assert a_record(stack)["AliasTarget"]["DNSName"].rstrip(".") == nlb["DNSName"]
    assert len(elbv2.describe_listeners(LoadBalancerArn=nlb["LoadBalancerArn"])["Listeners"]) == 2
    assert "~ network load balancer rendezvous-nlb" in out.getvalue()


def test_a_switch_that_stops_early_leaves_the_single_task_reachable(
    stack: Stack, quiet: Any
) -> None:
    """From one task to replicas, Redis comes before the tasks' rules change: a switch
    that stops there (the cache of an earlier switch still deleting; or one that waits
    minutes for a new cache) leaves the running task open on 10000 meanwhile. `down`
    then names only what it keeps."""
    with stack.fargate(), stack.propagation():
        commands.up(stack.aws(), stack.settings(replicas=2), quiet)
        commands.up(stack.aws(), stack.settings(), quiet)  # the cache: deleting (for good)
        before = group_rules(stack.endpoint, "rendezvous-server")
        assert (10000, "0.0.0.0/0") in before
        with pytest.raises(DeployError, match="rendezvous-cache is being deleted"):
            commands.up(stack.aws(), stack.settings(replicas=2), quiet)
        assert group_rules(stack.endpoint, "rendezvous-server") == before
        reporter, out = capturing()
        commands.down(stack.aws(), stack.settings(), reporter, delete=False, remove_record=False)
    assert "kept the load balancer" not in out.getvalue()  # none left; the cache is going
