"""Subnets and the security group the service runs in, with the early public-IP check."""

from __future__ import annotations

from typing import Any

from deploy.aws import Aws, DeployError
from deploy.server.settings import ServerSettings


def subnets(aws: Aws, settings: ServerSettings) -> list[dict[str, Any]]:
    """The configured subnets, or the default VPC's default subnets."""
    ec2 = aws.client("ec2")
    if settings.subnets:
        try:
            found = ec2.describe_subnets(SubnetIds=list(settings.subnets))["Subnets"]
        except Exception as err:
            if "InvalidSubnetID" in str(err):
                raise DeployError(f"subnet not found: {err}. Check --subnet") from err
            raise
    else:
        vpcs = ec2.describe_vpcs(Filters=[{"Name": "is-default", "Values": ["true"]}])["Vpcs"]
        if not vpcs:
            raise DeployError(
                "this region has no default VPC: pass --subnet SUBNET_ID (public subnets)"
            )
        found = ec2.describe_subnets(
            Filters=[
                {"Name": "vpc-id", "Values": [vpcs[0]["VpcId"]]},
                {"Name": "default-for-az", "Values": ["true"]},
            ]
        )["Subnets"]
        if not found:
            raise DeployError("the default VPC has no default subnets: pass --subnet")
    if len({s["VpcId"] for s in found}) != 1:
        raise DeployError("the subnets given are in different VPCs: pick subnets of one VPC")
    if not settings.assign_public_ip:
        private = [s["SubnetId"] for s in found if not s.get("MapPublicIpOnLaunch")]
        if private:
            raise DeployError(
                f"subnet {', '.join(private)} does not give a public IP "
                f"(MapPublicIpOnLaunch is false) and --no-assign-public-ip was given: the "
                f"task would be unreachable. Drop --no-assign-public-ip or use public subnets"
            )
    return sorted(found, key=lambda s: s["SubnetId"])


def _wanted_rules(settings: ServerSettings, vpc_cidr: str) -> list[tuple[int, str]]:
    return [(settings.port, "0.0.0.0/0"), (settings.http_port, settings.admin_cidr or vpc_cidr)]


def ensure_security_group(aws: Aws, settings: ServerSettings, vpc_id: str) -> tuple[str, bool]:
    """A group open on the rendezvous port to all, the HTTP port only to admin_cidr."""
    ec2 = aws.client("ec2")
    found = ec2.describe_security_groups(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "group-name", "Values": [settings.security_group_name]},
        ]
    )["SecurityGroups"]
    changed = False
    if found:
        group = found[0]
    else:
        group_id = ec2.create_security_group(
            GroupName=settings.security_group_name,
            Description=f"rendezvous server {settings.name}: TCP {settings.port} public, "
            f"{settings.http_port} admin only",
            VpcId=vpc_id,
        )["GroupId"]
        group = {"GroupId": group_id, "IpPermissions": []}
        changed = True
    vpc_cidr = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["CidrBlock"]
    have = {
        (p.get("FromPort"), r.get("CidrIp"))
        for p in group.get("IpPermissions", [])
        if p.get("IpProtocol") == "tcp" and p.get("FromPort") == p.get("ToPort")
        for r in p.get("IpRanges", [])
    }
    missing = [rule for rule in _wanted_rules(settings, vpc_cidr) if rule not in have]
    if missing:
        ec2.authorize_security_group_ingress(
            GroupId=group["GroupId"],
            IpPermissions=[
                {
                    "IpProtocol": "tcp",
                    "FromPort": port,
                    "ToPort": port,
                    "IpRanges": [{"CidrIp": cidr, "Description": "rendezvous-deploy"}],
                }
                for port, cidr in missing
            ],
        )
        changed = True
    return str(group["GroupId"]), changed
