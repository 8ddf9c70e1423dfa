"""The parts of AWS that moto does not play, played by the tests over moto's HTTP API.

``Fargate`` starts the service's task (moto never does) and gives its ENI an Elastic IP,
as Fargate's public IP would be; ``Propagation`` copies moto's Route 53 record into a
real authoritative DNS server (NSD) on loopback, as Route 53's name servers would.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import boto3
import dns.exception
import dns.message
import dns.query
import dns.rdatatype

from testbed.procs import free_port
from tests.facilities import require
from tests.processes import stop as stop_process


def clients(endpoint: str) -> dict[str, Any]:
    kw = {"endpoint_url": endpoint, "region_name": "us-east-1"}
    names = ("ecs", "ec2", "route53", "elbv2", "elasticache")
    return {name: boto3.client(name, **kw) for name in names}


def keep_tasks_running(endpoint: str) -> None:
    """moto advances a task's state on every describe; hold RUNNING tasks where they are."""
    body = {"model_name": "ecs::task", "transition": {"progression": "manual", "times": 10**9}}
    request = urllib.request.Request(
        f"{endpoint}/moto-api/state-manager/set-transition",
        data=json.dumps(body).encode(),
        method="POST",
    )
    urllib.request.urlopen(request, timeout=10).close()


class _Background:
    """Run ``step()`` every ``interval`` seconds in a thread; re-raise its error on exit."""

    interval = 0.1

    def step(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def __enter__(self) -> _Background:
        self._stop = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=type(self).__name__, daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except BaseException as err:  # surfaced in __exit__
                self._error = err
                return
            self._stop.wait(self.interval)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive(), f"{type(self).__name__} thread did not stop"
        if self._error is not None and exc[0] is None:
            raise self._error


class Fargate(_Background):
    """Keeps the service's desired count of tasks of its current definition RUNNING with
    a public IP; with load balancers, registers each task's private IP in their target
    groups and deregisters it when it stops (what ECS does)."""

    def __init__(self, endpoint: str, cluster: str = "rendezvous", service: str = "rendezvous"):
        self.aws = clients(endpoint)
        self.cluster = cluster
        self.service = service
        self.fail_with: str | None = None  # stop each new task at once with this reason
        self.public_ip = True
        self.started: list[tuple[str, str | None]] = []
        self.targets: dict[str, list[tuple[str, str, int]]] = {}
        self._lock = threading.Lock()

    def _service(self) -> dict[str, Any] | None:
        try:
            found = self.aws["ecs"].describe_services(cluster=self.cluster, services=[self.service])
        except self.aws["ecs"].exceptions.ClusterNotFoundException:
            return None
        active = [s for s in found["services"] if s["status"] == "ACTIVE"]
        return active[0] if active else None

    def tasks(self) -> list[dict[str, Any]]:
        arns = self.aws["ecs"].list_tasks(cluster=self.cluster, serviceName=self.service)
        if not arns["taskArns"]:
            return []
        return self.aws["ecs"].describe_tasks(cluster=self.cluster, tasks=arns["taskArns"])["tasks"]

    def running(self) -> list[dict[str, Any]]:
        return [t for t in self.tasks() if t["lastStatus"] == "RUNNING"]

    def step(self) -> None:
        with self._lock:
            service = self._service()
            if service is None:
                return
            running = self.running()
            for task in running:
                if service["desiredCount"] == 0 or (
                    task["taskDefinitionArn"] != service["taskDefinition"]
                ):
                    self.stop(task["taskArn"], "Scaling activity initiated by deployment")
            current = [t for t in running if t["taskDefinitionArn"] == service["taskDefinition"]]
            for task in current[service["desiredCount"]:]:  # scaled in
                self.stop(task["taskArn"], "Scaling activity initiated by deployment")
            for _ in range(service["desiredCount"] - len(current)):
                self._start(service)

    def _start(self, service: dict[str, Any]) -> tuple[str, str | None]:
        task = self.aws["ecs"].run_task(
            cluster=self.cluster,
            taskDefinition=service["taskDefinition"],
            launchType="FARGATE",
            group=f"service:{self.service}",
            networkConfiguration=service["networkConfiguration"],
        )["tasks"][0]
        ip = None
        private = next(
            (d["value"] for d in task["attachments"][0]["details"]
             if d["name"] == "privateIPv4Address"),
            None,
        )
        for lb in service.get("loadBalancers") or []:
            self.aws["elbv2"].register_targets(
                TargetGroupArn=lb["targetGroupArn"],
                Targets=[{"Id": private, "Port": lb["containerPort"]}],
            )
            self.targets.setdefault(task["taskArn"], []).append(
                (lb["targetGroupArn"], private, lb["containerPort"])
            )
        if self.fail_with:  # before it gets an address, so no waiter can see it usable
            self.stop(task["taskArn"], self.fail_with)
        elif self.public_ip:
            eni = next(
                d["value"]
                for d in task["attachments"][0]["details"]
                if d["name"] == "networkInterfaceId"
            )
            address = self.aws["ec2"].allocate_address(Domain="vpc")
            self.aws["ec2"].associate_address(
                AllocationId=address["AllocationId"], NetworkInterfaceId=eni
            )
            ip = address["PublicIp"]
        self.started.append((task["taskArn"], ip))
        return task["taskArn"], ip

    def stop(self, task_arn: str, reason: str) -> None:
        for group, private, port in self.targets.pop(task_arn, []):
            try:
                self.aws["elbv2"].deregister_targets(
                    TargetGroupArn=group, Targets=[{"Id": private, "Port": port}]
                )
            except self.aws["elbv2"].exceptions.TargetGroupNotFoundException:
                pass  # deleted with the load balancer (down, or a switch to one task)
        self.aws["ecs"].stop_task(cluster=self.cluster, task=task_arn, reason=reason)

    def replace(self, reason: str = "Task stopped by the test") -> tuple[str, str | None]:
        """What ECS does on a crash: stop the task, start a new one (with a new IP)."""
        with self._lock:
            for task in self.running():
                self.stop(task["taskArn"], reason)
            service = self._service()
            assert service is not None, "no service to replace a task of"
            return self._start(service)


class Nsd:
    """A real authoritative DNS server (NSD) serving one zone on 127.0.0.1:<port>."""

    def __init__(self, workdir: Path, zone: str) -> None:
        exe = shutil.which("nsd") or "/usr/sbin/nsd"
        require(Path(exe).exists(), "nsd (Debian package nsd; .ci/system-deps installs it)")
        self.exe = exe
        self.dir = workdir
        self.zone = zone.rstrip(".") + "."
        self.port = free_port()
        self.serial = 0
        self.records: dict[str, str] = {}
        self.proc: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _write_zone(self) -> None:
        self.serial += 1
        lines = [
            f"$ORIGIN {self.zone}",
            "$TTL 60",
            f"@ IN SOA ns1 hostmaster {self.serial} 3600 600 86400 60",
            "@ IN NS ns1",
            "ns1 IN A 127.0.0.1",
            *(f"{name} IN A {ip}" for name, ip in sorted(self.records.items())),
        ]
        path = self.dir / "zone.tmp"
        path.write_text("\n".join(lines) + "\n")
        path.replace(self.dir / "zone")

    def start(self) -> None:
        self._write_zone()
        conf = self.dir / "nsd.conf"
        conf.write_text(
            f"""server:
  ip-address: 127.0.0.1
  port: {self.port}
  username: ""
  chroot: ""
  zonesdir: "{self.dir}"
  database: ""
  zonelistfile: "{self.dir}/zone.list"
  xfrdfile: "{self.dir}/xfrd.state"
  pidfile: "{self.dir}/nsd.pid"
  logfile: "{self.dir}/nsd.log"
  server-count: 1
  do-ip6: no
  verbosity: 1
remote-control:
  control-enable: no
zone:
  name: {self.zone}
  zonefile: "{self.dir}/zone"
"""
        )
        self.proc = subprocess.Popen(
            [self.exe, "-d", "-c", str(conf)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self._wait_serial()

    def serve(self, records: dict[str, str]) -> None:
        """Replace the A records (name relative to the zone -> IP) and reload."""
        with self._lock:  # one writer at a time: the zone file and serial are shared
            self.records = dict(records)
            self._write_zone()
            assert self.proc is not None
            self.proc.send_signal(signal.SIGHUP)
            self._wait_serial()

    def _wait_serial(self) -> None:
        deadline = time.monotonic() + 10
        nudge = time.monotonic() + 1
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                log = (self.dir / "nsd.log").read_text() if (self.dir / "nsd.log").exists() else ""
                raise RuntimeError(f"nsd exited with {self.proc.returncode}: {log[-2000:]}")
            try:
                query = dns.message.make_query(self.zone, "SOA")
                answer = dns.query.udp(query, "127.0.0.1", port=self.port, timeout=0.5)
                serials = [r.serial for rrset in answer.answer for r in rrset]
                if serials == [self.serial]:
                    return
            except (dns.exception.Timeout, OSError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"nsd did not serve serial {self.serial} within 10 s")
            if self.serial > 1 and time.monotonic() > nudge:  # a reload it may have missed
                self.proc.send_signal(signal.SIGHUP)
                nudge = time.monotonic() + 1
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is None:
            return
        stop_process(self.proc)
        self.proc = None


class Propagation(_Background):
    """Copies the zone's A records from moto's Route 53 into NSD (Route 53's job)."""

    def __init__(self, endpoint: str, zone_id: str, nsd: Nsd) -> None:
        self.r53 = clients(endpoint)["route53"]
        self.zone_id = zone_id
        self.nsd = nsd

    def records(self) -> dict[str, str]:
        found = self.r53.list_resource_record_sets(HostedZoneId=self.zone_id)
        records = {}
        for rrset in found["ResourceRecordSets"]:
            if rrset["Type"] == "A" and rrset.get("ResourceRecords"):
                name = rrset["Name"].rstrip(".") + "."
                relative = name[: -len(self.nsd.zone)].rstrip(".") or "@"
                records[relative] = rrset["ResourceRecords"][0]["Value"]
        return records

    def step(self) -> None:
        records = self.records()
        if records != self.nsd.records:
            self.nsd.serve(records)


def answer(nsd: Nsd, fqdn: str) -> list[str]:
    response = dns.query.udp(
        dns.message.make_query(fqdn, "A"), "127.0.0.1", port=nsd.port, timeout=2
    )
    return sorted(r.address for rr in response.answer if rr.rdtype == dns.rdatatype.A for r in rr)


def unique(prefix: str) -> str:
    return f"{prefix}{os.getpid()}"


def create_boundaries(endpoint: str) -> None:
    """What an administrator does once per account: create the permissions boundaries
    every role rendezvous-deploy makes must carry (deploy/iam/*-boundary.json)."""
    from rendezvous_deploy.roles import BOUNDARY_FILES, policy

    iam = boto3.client("iam", endpoint_url=endpoint, region_name="us-east-1")
    for name, file in BOUNDARY_FILES.items():
        document = policy(file, Account="123456789012")  # moto's account
        iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(document))
