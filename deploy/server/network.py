"""Subnets and the security group the service runs in, with the early public-IP check."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rendezvous_deploy.aws import Aws, DeployError
from rendezvous_deploy.server.settings import ServerSettings


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


Rule = tuple[str, int | None, int | None, str]  # (protocol, from port, to port, source)


def _wanted_rules(
    settings: ServerSettings, vpc_cidr: str, group_id: str, balancer_group: str | None
) -> set[Rule]:
    if settings.replicated:  # behind the NLB, which sends PROXY v2 on both ports
        if balancer_group is None:
            raise ValueError("replicas need the load balancer's security group")
        # Only the NLB's own group, never the VPC's CIDR: anything else in the VPC could
        # reach 10000 or 10002 directly and bring a PROXY header naming any client.
        rules = [
            (settings.port, balancer_group),  # PROXY v2 from the NLB
            (settings.port, group_id),  # the other replicas forwarding relay ends
            (settings.http_port, balancer_group),  # the NLB's health checks
            (settings.http_port, settings.admin_cidr or vpc_cidr),
        ]
        if settings.discovery_port:  # through the NLB only (PROXY v2, as 10000)
            rules.append((settings.discovery_port, balancer_group))
    else:
        rules = [
            (settings.port, "0.0.0.0/0"),
            (settings.http_port, settings.admin_cidr or vpc_cidr),
        ]
        if settings.discovery_port:  # NAT discovery: every client, as the rendezvous port
            rules.append((settings.discovery_port, "0.0.0.0/0"))
    return {("tcp", port, port, source) for port, source in rules}


Change = Callable[[str, object, object], None]  # (what, old, new), e.g. Reporter.change


def _rules(group: dict[str, Any]) -> set[Rule]:
    """Every ingress rule of ``group`` as (protocol, from port, to port, source)."""
    return set(_descriptions(group))


def _descriptions(group: dict[str, Any]) -> dict[Rule, str]:
    """Every ingress rule of ``group`` with its description ("" when none)."""
    found = {}
    for permission in group.get("IpPermissions", []):
        key = (permission.get("IpProtocol"), permission.get("FromPort"), permission.get("ToPort"))
        sources = [(r["CidrIp"], r) for r in permission.get("IpRanges", [])]
        sources += [(r["CidrIpv6"], r) for r in permission.get("Ipv6Ranges", [])]
        sources += [(p["PrefixListId"], p) for p in permission.get("PrefixListIds", [])]
        sources += [(g["GroupId"], g) for g in permission.get("UserIdGroupPairs", [])]
        for source, entry in sources:
            found[(*key, source)] = str(entry.get("Description", ""))
    return found


def _permission(rule: Rule, description: str = "") -> dict[str, Any]:
    """The IpPermissions entry that names exactly ``rule`` (to revoke or authorize it)."""
    protocol, low, high, source = rule
    entry: dict[str, Any] = {"IpProtocol": protocol}
    if low is not None:
        entry.update(FromPort=low, ToPort=high)
    named = {"Description": description} if description else {}
    if source.startswith("pl-"):
        entry["PrefixListIds"] = [{"PrefixListId": source, **named}]
    elif source.startswith("sg-"):
        entry["UserIdGroupPairs"] = [{"GroupId": source, **named}]
    elif ":" in source:
        entry["Ipv6Ranges"] = [{"CidrIpv6": source, **named}]
    else:
        entry["IpRanges"] = [{"CidrIp": source, **named}]
    return entry


def _by_port(rules: set[Rule]) -> dict[str, list[str]]:
    shown: dict[str, list[str]] = {}
    for protocol, low, high, source in sorted(rules, key=repr):
        port = "all" if low is None or low == -1 else str(low) if low == high else f"{low}-{high}"
        shown.setdefault(f"{protocol} {port}", []).append(source)
    return shown


def ensure_security_group(
    aws: Aws,
    settings: ServerSettings,
    vpc_id: str,
    on_change: Change | None = None,
    balancer_group: str | None = None,
) -> tuple[str, bool]:
    """The group of this mode's tasks (``settings.task_group_name``). One task: open on
    the rendezvous port to all, the HTTP port only to admin_cidr, and nothing else: rules
    no longer asked for (an old --admin-cidr) are revoked. Replicas: a group of their own,
    the rendezvous and discovery ports only from the NLB's ``balancer_group`` (and the
    rendezvous port from the group itself, for relay forwarding). The other mode's group
    is never touched here, so a switch leaves each old task in the group it started with.

    Created with the MANAGED_BY_TAG tag (TagSpecifications: no separate CreateTags call);
    rules are added and revoked only on a group that has it, as the deployer policy allows.
    Each port whose sources change is reported to ``on_change`` as old -> new.
    """
    return ensure_group(
        aws,
        vpc_id,
        settings.task_group_name,
        (
            f"rendezvous server {settings.name} replicas: TCP {settings.port} from the "
            f"load balancer only, {settings.http_port} admin only"
            if settings.replicated
            else f"rendezvous server {settings.name}: TCP {settings.port} public, "
            f"{settings.http_port} admin only"
        ),
        lambda vpc_cidr, group_id: _wanted_rules(settings, vpc_cidr, group_id, balancer_group),
        on_change,
    )


def find_group(aws: Aws, vpc_id: str | None, name: str) -> list[dict[str, Any]]:
    filters = [{"Name": "group-name", "Values": [name]}]
    if vpc_id:
        filters.append({"Name": "vpc-id", "Values": [vpc_id]})
    return list(aws.client("ec2").describe_security_groups(Filters=filters)["SecurityGroups"])


def ensure_group(
    aws: Aws,
    vpc_id: str,
    name: str,
    description: str,
    wanted_rules: Callable[[str, str], set[Rule]],
    on_change: Change | None = None,
) -> tuple[str, bool]:
    """Security group ``name`` with exactly ``wanted_rules(vpc_cidr, group_id)``."""
    ec2 = aws.client("ec2")
    found = find_group(aws, vpc_id, name)
    changed = False
    if found:
        group = found[0]
    else:
        group_id = ec2.create_security_group(
            GroupName=name,
            Description=description,
            VpcId=vpc_id,
            TagSpecifications=[
                {
                    "ResourceType": "security-group",
                    "Tags": [{"Key": MANAGED_BY_TAG, "Value": MANAGED_BY}],
                }
            ],
        )["GroupId"]
        group = {
            "GroupId": group_id,
            "IpPermissions": [],
            "Tags": [{"Key": MANAGED_BY_TAG, "Value": MANAGED_BY}],
        }
        changed = True
    vpc_cidr = ec2.describe_vpcs(VpcIds=[vpc_id])["Vpcs"][0]["CidrBlock"]
    have = _rules(group)
    wanted = wanted_rules(vpc_cidr, group["GroupId"])
    missing = sorted(wanted - have, key=repr)
    extra = sorted(have - wanted, key=repr)
    if (missing or extra) and not managed(group):
        problems = []
        if missing:
            problems.append(f"lacks rules {', '.join(f'{r[1]} from {r[3]}' for r in missing)}")
        if extra:
            problems.append(
                f"has rules not asked for ({', '.join(f'{r[1]} from {r[3]}' for r in extra)})"
            )
        raise DeployError(
            f"security group {group['GroupId']} ({name}) "
            f"{' and '.join(problems)} and was not "
            f"made by rendezvous-deploy (no tag {MANAGED_BY_TAG}={MANAGED_BY}), so "
            f"deploy/iam/deployer.json does not let the deployer change it. Tag it (aws ec2 "
            f"create-tags --resources {group['GroupId']} --tags "
            f"Key={MANAGED_BY_TAG},Value={MANAGED_BY}) or delete it, then run up again"
        )
    if extra:  # first close what is no longer asked for, then open what is
        described = _descriptions(group)  # named as found (moto matches descriptions)
        ec2.revoke_security_group_ingress(
            GroupId=group["GroupId"],
            IpPermissions=[_permission(rule, described.get(rule, "")) for rule in extra],
        )
        changed = True
    if missing:
        ec2.authorize_security_group_ingress(
            GroupId=group["GroupId"],
            IpPermissions=[_permission(rule, "rendezvous-deploy") for rule in missing],
        )
        changed = True
    if on_change is not None and (missing or extra):
        old, new = _by_port(have), _by_port(wanted)
        for port in sorted({*old, *new}):
            if sorted(old.get(port, [])) != sorted(new.get(port, [])):
                on_change(
                    f"security group {group['GroupId']} {port} from",
                    ", ".join(old.get(port, [])),
                    ", ".join(new.get(port, [])),
                )
    return str(group["GroupId"]), changed


def delete_security_group(aws: Aws, settings: ServerSettings, name: str | None = None) -> list[str]:
    """Delete the group ``up`` made (tagged; never one made by hand); what happened."""
    ec2 = aws.client("ec2")
    found = find_group(aws, None, name or settings.security_group_name)
    done = []
    for group in found:
        if not managed(group):
            done.append(f"kept security group {group['GroupId']}: not made by rendezvous-deploy")
            continue
        try:
            ec2.delete_security_group(GroupId=group["GroupId"])
        except Exception as err:
            if "DependencyViolation" not in str(err):
                raise
            done.append(
                f"kept security group {group['GroupId']} ({group['GroupName']}): still in "
                "use (a stopped task's network interface goes minutes later; another group's "
                "rule may name it): a later `up` or `down --delete` removes it (run down "
                "--delete again)"
            )
            continue
        done.append(f"removed security group {group['GroupId']} ({group['GroupName']})")
    return done
