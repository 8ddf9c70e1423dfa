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


# The tag every security group `up` creates carries. deploy/iam/deployer.json lets the
# deployer create groups only with it and add rules only to groups that have it, so the
# deploying identity cannot open ports on anyone else's groups.
MANAGED_BY_TAG = "rendezvous:managed-by"
MANAGED_BY = "rendezvous-deploy"


def managed(group: dict[str, Any]) -> bool:
    """Whether ``group`` (as describe_security_groups returns it) carries our tag."""
    return any(
        t.get("Key") == MANAGED_BY_TAG and t.get("Value") == MANAGED_BY
        for t in group.get("Tags", [])
    )


def _wanted_rules(settings: ServerSettings, vpc_cidr: str) -> list[tuple[int, str]]:
    return [(settings.port, "0.0.0.0/0"), (settings.http_port, settings.admin_cidr or vpc_cidr)]


def ensure_security_group(aws: Aws, settings: ServerSettings, vpc_id: str) -> tuple[str, bool]:
    """A group open on the rendezvous port to all, the HTTP port only to admin_cidr.

    Created with the MANAGED_BY_TAG tag (TagSpecifications: no separate CreateTags call);
    rules are added only to a group that has it, as the deployer policy allows.
    """
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
            TagSpecifications=[
                {
                    "ResourceType": "security-group",
                    "Tags": [{"Key": MANAGED_BY_TAG, "Value": MANAGED_BY}],
                }
            ],
        )["GroupId"]
        group = {"GroupId": group_id, "IpPermissions": [],
                 "Tags": [{"Key": MANAGED_BY_TAG, "Value": MANAGED_BY}]}
        changed = True
    vpc_cidr = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["CidrBlock"]
    have = {
        (p.get("FromPort"), r.get("CidrIp"))
        for p in group.get("IpPermissions", [])
        if p.get("IpProtocol") == "tcp" and p.get("FromPort") == p.get("ToPort")
        for r in p.get("IpRanges", [])
    }
    missing = [rule for rule in _wanted_rules(settings, vpc_cidr) if rule not in have]
    if missing and not managed(group):
        raise DeployError(
            f"security group {group['GroupId']} ({settings.security_group_name}) lacks "
            f"rules {', '.join(f'{port} from {cidr}' for port, cidr in missing)} and was not "
            f"made by rendezvous-deploy (no tag {MANAGED_BY_TAG}={MANAGED_BY}), so "
            f"deploy/iam/deployer.json does not let the deployer change it. Tag it (aws ec2 "
            f"create-tags --resources {group['GroupId']} --tags "
            f"Key={MANAGED_BY_TAG},Value={MANAGED_BY}) or delete it, then run up again"
        )
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
