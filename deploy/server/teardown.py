"""What ``server down`` does: scale to zero, or delete what ``up`` made (also the load
balancer and the cache of replicas mode), and the record on request."""

from __future__ import annotations

from rendezvous_deploy.aws import Aws, DeployError
from rendezvous_deploy.progress import Reporter
from rendezvous_deploy.server import (
    authsecret,
    balancer,
    cache,
    follower,
    iam,
    network,
    record,
    redissecret,
    replicas,
    service,
)
from rendezvous_deploy.server import monitoring as cloudwatch
from rendezvous_deploy.server.settings import ServerSettings


def _stale_record(
    aws: Aws, settings: ServerSettings, reporter: Reporter, zone: record.Zone
) -> None:
    """Warn when the record is left behind: with the service at zero (or deleted) its
    address is that of a stopped task, which Fargate releases and AWS may hand to
    someone else's task."""
    found = record.current_a(aws, zone, settings.fqdn)
    if not found:
        reporter.step(f"record {settings.fqdn} absent", changed=False)
        return
    alias = record.current_alias(aws, zone, settings.fqdn)
    if alias is not None:
        reporter.warn(
            f"{settings.fqdn} is still an alias to the load balancer {alias[0]}, which has "
            f"no task behind it now (or is gone): clients reach nothing. Run "
            f"`rendezvous-deploy server down --record {settings.fqdn.rstrip('.')} "
            f"--remove-record` to delete the record (or `server up` to bring it back)"
        )
        return
    reporter.warn(
        f"{settings.fqdn} still points at {', '.join(found[0])}, the address of a task "
        f"that is stopping or stopped: it is released and may be given to someone else. "
        f"Run `rendezvous-deploy server down --record {settings.fqdn.rstrip('.')} "
        f"--remove-record` to delete the record (or `server up` to bring the server back)"
    )


def delete_plan(settings: ServerSettings, remove_record: bool) -> tuple[list[str], list[str]]:
    """(what ``down --delete`` deletes, what it keeps and why)."""
    deletes = [
        f"service {settings.service_name}",
        f"rule {settings.refresher_rule}, function {settings.refresher_function}, "
        f"role {settings.refresher_role}",
        f"role {settings.execution_role}",
        f"auth secret {authsecret.secret_name(settings.name)} (credentials minted from it "
        "stop working)",
        f"security group {settings.security_group_name}",
        f"with --replicas: security group {settings.replicas_group_name}, load balancer "
        f"{settings.balancer_name}, its listeners and security group, target "
        f"groups {settings.rendezvous_target_group} and {settings.discovery_target_group}, "
        f"and the ElastiCache {settings.cache_name} (replication group, subnet group, "
        "security group; waits for it to go, up to --cache-timeout), the secret "
        f"rendezvous/{settings.name}/redis-url of --redis-url",
        f"task definitions {settings.family}:*",
        f"cluster {settings.cluster_name} (when nothing else runs in it)",
    ]
    if remove_record:
        deletes.append(f"record {settings.fqdn}")
    keeps = [
        f"log group {settings.log_group}: the server's logs, for a post-mortem (aws logs "
        f"delete-log-group --log-group-name {settings.log_group})",
        f"ECR repository {settings.repository}, if `up` pushed to it: your images (aws ecr "
        f"delete-repository --force --repository-name {settings.repository})",
    ]
    if not remove_record:
        keeps.append("the DNS record (pass --record NAME --remove-record)")
    return deletes, keeps


def _delete_rest(aws: Aws, settings: ServerSettings, reporter: Reporter) -> None:
    """What ``up`` made besides the service and the follower; each step tolerates absence."""
    if iam.delete_role(aws, settings.execution_role):
        reporter.step(f"removed role {settings.execution_role}")
    if authsecret.delete(aws, settings.name):
        reporter.step(f"removed auth secret {authsecret.secret_name(settings.name)}")
    for what in network.delete_security_group(aws, settings):  # the single task's
        reporter.step(what)
    for what in replicas.remove_groups(aws, settings):  # and the NLB's, in that order
        reporter.step(what)
    for what in service.deregister_family(aws, settings):
        reporter.step(what)
    for what in service.delete_cluster(aws, settings):
        reporter.step(what)


def down(
    aws: Aws, settings: ServerSettings, reporter: Reporter, *, delete: bool, remove_record: bool
) -> None:
    if remove_record and not settings.record:
        raise DeployError("--remove-record needs --record NAME (nothing was changed)")
    zone = None
    if settings.record:  # found (or refused) before anything changes
        zone = record.check_inside(
            record.find_zone(aws, settings.record, settings.zone), settings.fqdn
        )
    if delete:
        deletes, keeps = delete_plan(settings, remove_record)
        reporter.note("deleting: " + "; ".join(deletes))
        reporter.note("keeping: " + "; ".join(keeps))
    ecs = aws.client("ecs")
    current = service.describe_service(aws, settings)
    if current is None:
        reporter.step(f"service {settings.service_name} absent", changed=False)
    elif delete:
        ecs.delete_service(cluster=settings.cluster_name, service=settings.service_name, force=True)
        reporter.step(f"service {settings.service_name} deleted")
    elif current.get("desiredCount") != 0:
        ecs.update_service(
            cluster=settings.cluster_name, service=settings.service_name, desiredCount=0
        )
        reporter.step(f"service {settings.service_name} scaled to 0")
    else:
        reporter.step(f"service {settings.service_name} already at 0", changed=False)
    if delete:
        for what in follower.remove(aws, settings):
            reporter.step(f"removed {what}")
        for what in balancer.remove(aws, settings):
            reporter.step(what)
        timeout = settings.waits.cache_timeout
        with reporter.waiting(f"Removing ElastiCache {settings.cache_name}", timeout=timeout):
            for what in cache.remove(aws, settings, wait=timeout):
                reporter.step(what)
        if redissecret.delete(aws, settings.name):
            reporter.step(f"removed the secret {redissecret.secret_name(settings.name)}")
        _delete_rest(aws, settings, reporter)
    else:
        kept = []
        if balancer.find_balancer(aws, settings):
            kept.append(f"the load balancer {settings.balancer_name}")
        if (cache.find(aws, settings) or {}).get("Status", "deleting") != "deleting":
            kept.append(f"the cache {settings.cache_name}")
        if kept:
            reporter.note(
                f"kept {' and '.join(kept)} (they cost by the hour while the service is at "
                "0): `down --delete` removes them"
            )
    for what in cloudwatch.remove(aws, settings):  # an idle service's alarms would ring
        reporter.step(f"removed {what}")
    if zone is not None and remove_record:
        removed = record.delete_a(aws, zone, settings.fqdn)
        reporter.step(f"record {settings.fqdn} {'removed' if removed else 'absent'}", removed)
    elif zone is not None:
        _stale_record(aws, settings, reporter, zone)
    else:
        reporter.note(
            "no --record given: if a DNS record points at the task, it now points at a "
            "released address; pass --record NAME --remove-record to delete it"
        )
