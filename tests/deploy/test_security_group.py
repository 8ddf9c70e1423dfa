"""The server's security group carries the tag deployer.json's EC2 statements rely on.

deploy/iam/deployer.json lets the deployer create a group only with the tag and add
rules only to a group that has it; these tests check the code keeps its side of that,
against a moto server process.
"""

from __future__ import annotations

import os
from typing import Any

import boto3
import pytest

from rendezvous_deploy.aws import Aws, DeployError
from rendezvous_deploy.server import network
from rendezvous_deploy.server.settings import ServerSettings


@pytest.fixture
def ec2(aws_env: str) -> Any:
    return boto3.client("ec2", endpoint_url=aws_env, region_name="us-east-1")


def default_vpc(ec2: Any) -> str:
    vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
    assert vpcs, "moto's us-east-1 has a default VPC"
    return str(vpcs[0]["VpcId"])


def settings() -> ServerSettings:
    return ServerSettings(name=f"rendezvous-sg-{os.getpid()}", admin_cidr="203.0.113.0/24")


def test_group_is_created_tagged_in_one_call_and_left_alone_after(aws_env: str, ec2: Any) -> None:
    vpc = default_vpc(ec2)
    aws = Aws(endpoint_url=aws_env)
    group_id, changed = network.ensure_security_group(aws, settings(), vpc)
    assert changed
    assert "ec2:CreateTags" not in aws.actions  # tagged by TagSpecifications, not afterwards
    group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    assert {"Key": network.MANAGED_BY_TAG, "Value": network.MANAGED_BY} in group["Tags"]
    assert network.managed(group)
    opened = {
        (p["FromPort"], r["CidrIp"]) for p in group["IpPermissions"] for r in p.get("IpRanges", [])
    }
    assert opened == {(10000, "0.0.0.0/0"), (10001, "203.0.113.0/24"), (10002, "0.0.0.0/0")}

    again = Aws(endpoint_url=aws_env)
    assert network.ensure_security_group(again, settings(), vpc) == (group_id, False)
    assert not {"ec2:CreateSecurityGroup", "ec2:AuthorizeSecurityGroupIngress"} & again.actions


def test_untagged_group_missing_rules_is_an_early_error_with_the_fix(
    aws_env: str, ec2: Any
) -> None:
    vpc = default_vpc(ec2)
    group_id = ec2.create_security_group(
        GroupName=settings().security_group_name, Description="made by hand", VpcId=vpc
    )["GroupId"]
    aws = Aws(endpoint_url=aws_env)
    with pytest.raises(DeployError) as refused:
        network.ensure_security_group(aws, settings(), vpc)
    message = str(refused.value)
    assert group_id in message and "10000 from 0.0.0.0/0" in message
    assert f"--tags Key={network.MANAGED_BY_TAG},Value={network.MANAGED_BY}" in message
    assert "ec2:AuthorizeSecurityGroupIngress" not in aws.actions

    # Tagged as the message says, the same call goes through.
    ec2.create_tags(
        Resources=[group_id], Tags=[{"Key": network.MANAGED_BY_TAG, "Value": network.MANAGED_BY}]
    )
    assert network.ensure_security_group(Aws(endpoint_url=aws_env), settings(), vpc) == (
        group_id,
        True,
    )


def test_untagged_group_that_already_has_the_rules_is_used_as_is(aws_env: str, ec2: Any) -> None:
    vpc = default_vpc(ec2)
    group_id = ec2.create_security_group(
        GroupName=settings().security_group_name, Description="made by hand", VpcId=vpc
    )["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": cidr}]}
            for port, cidr in (
                (10000, "0.0.0.0/0"),
                (10001, "203.0.113.0/24"),
                (10002, "0.0.0.0/0"),
            )
        ],
    )
    aws = Aws(endpoint_url=aws_env)
    assert network.ensure_security_group(aws, settings(), vpc) == (group_id, False)
    assert "ec2:AuthorizeSecurityGroupIngress" not in aws.actions


def _opened(ec2: Any, group_id: str) -> set[tuple[int, str]]:
    group = ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    return {
        (p.get("FromPort"), r["CidrIp"])
        for p in group["IpPermissions"]
        for r in p.get("IpRanges", [])
    }


def test_rules_no_longer_asked_for_are_revoked_and_reported_old_to_new(
    aws_env: str, ec2: Any
) -> None:
    """--admin-cidr 0.0.0.0/0, then 203.0.113.0/24: the HTTP port is no longer open to all."""
    from dataclasses import replace

    vpc = default_vpc(ec2)
    wide = replace(settings(), admin_cidr="0.0.0.0/0")
    group_id, _ = network.ensure_security_group(Aws(endpoint_url=aws_env), wide, vpc)
    assert _opened(ec2, group_id) == {
        (10000, "0.0.0.0/0"),
        (10001, "0.0.0.0/0"),
        (10002, "0.0.0.0/0"),
    }
    # Someone opened SSH by hand on the managed group: not asked for either.
    ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[
            {
                "IpProtocol": "tcp",
                "FromPort": 22,
                "ToPort": 22,
                "IpRanges": [{"CidrIp": "198.51.100.0/24"}],
            }
        ],
    )

    changes: list[tuple[str, object, object]] = []
    aws = Aws(endpoint_url=aws_env)
    narrowed = network.ensure_security_group(
        aws, settings(), vpc, on_change=lambda *change: changes.append(change)
    )
    assert narrowed == (group_id, True)
    assert _opened(ec2, group_id) == {
        (10000, "0.0.0.0/0"),
        (10001, "203.0.113.0/24"),
        (10002, "0.0.0.0/0"),
    }
    assert "ec2:RevokeSecurityGroupIngress" in aws.actions
    assert sorted(changes) == [
        (f"security group {group_id} tcp 10001 from", "0.0.0.0/0", "203.0.113.0/24"),
        (f"security group {group_id} tcp 22 from", "198.51.100.0/24", ""),
    ]
    again = Aws(endpoint_url=aws_env)
    assert network.ensure_security_group(again, settings(), vpc) == (group_id, False)
    assert not {"ec2:RevokeSecurityGroupIngress", "ec2:AuthorizeSecurityGroupIngress"} & (
        again.actions
    )


def test_untagged_group_with_extra_rules_is_refused_not_used(aws_env: str, ec2: Any) -> None:
    vpc = default_vpc(ec2)
    group_id = ec2.create_security_group(
        GroupName=settings().security_group_name, Description="made by hand", VpcId=vpc
    )["GroupId"]
    ec2.authorize_security_group_ingress(
        GroupId=group_id,
        IpPermissions=[
            {"IpProtocol": "tcp", "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": cidr}]}
            for port, cidr in ((10000, "0.0.0.0/0"), (10001, "0.0.0.0/0"))
        ],
    )
    with pytest.raises(DeployError, match=r"has rules not asked for \(10001 from 0\.0\.0\.0/0\)"):
        network.ensure_security_group(Aws(endpoint_url=aws_env), settings(), vpc)
