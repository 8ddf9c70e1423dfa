"""Three replica processes, one redis-server: racing sides of 150 names (a third of them
with a third client) match exactly once, and every handed-out waiter hears its peer."""

from __future__ import annotations

import asyncio
import json
import random
import sys
import textwrap
import uuid
from typing import Any

import pytest

from testbed.procs import python_env

# One replica: reads its arrivals (JSON) from stdin, starts them all on "go", prints
# one line of outcomes, then one line per PeerArrived event.
_REPLICA = textwrap.dedent(
    """
    import asyncio, json, sys
    from rendezvous.shared_room import Paired, PeerArrived, SharedRoom, Waiting
    from tcpunch import Endpoint

    def emit(record):
        sys.stdout.write(json.dumps(record) + "\\n")
        sys.stdout.flush()

    def on_event(event):
        if isinstance(event, PeerArrived):
            emit({"heard": event.waiter.handle, "peer": list(event.peer)})

    async def main(url, prefix, replica):
        room = SharedRoom(url, on_event, prefix=prefix, replica_id=replica, op_timeout=10)
        await room.start(ready_timeout=20)
        jobs = json.loads(sys.stdin.readline())
        emit({"ready": replica})
        await asyncio.to_thread(sys.stdin.readline)  # "go"
        outcomes = await asyncio.gather(*(
            room.arrive(name.encode(), port, Endpoint(ip, port), proto, 0.0)
            for name, ip, port, proto in jobs
        ))
        result = []
        for (name, ip, port, _), outcome in zip(jobs, outcomes):
            record = {"name": name, "port": port, "kind": type(outcome).__name__}
            if isinstance(outcome, Paired):
                record["waiter"] = [outcome.waiter.replica, outcome.waiter.endpoint.port]
            result.append(record)
        emit({"outcomes": result})
        await asyncio.to_thread(sys.stdin.readline)  # "stop"
        await room.stop()

    asyncio.run(main(*sys.argv[1:4]))
    """
)


async def _line(proc: asyncio.subprocess.Process) -> dict[str, Any]:
    assert proc.stdout is not None
    raw = await asyncio.wait_for(proc.stdout.readline(), 60)
    assert raw, "a replica process ended early"
    record: dict[str, Any] = json.loads(raw)
    return record


@pytest.mark.timeout(180)
async def test_three_replica_processes_match_each_pair_exactly_once(redis_server):
    prefix = f"procs-{uuid.uuid4().hex[:8]}:"
    names = 150
    rng = random.Random(1616)
    jobs: dict[str, list[list[Any]]] = {f"p{i}": [] for i in range(3)}
    for n in range(names):
        sides = 3 if n % 3 == 0 else 2
        replicas = rng.sample(sorted(jobs), 2) + ([rng.choice(sorted(jobs))] if sides == 3 else [])
        for side, replica in enumerate(replicas):
            port = 10000 + n * 3 + side
            jobs[replica].append([f"race_{n}", "10.9.0.1", port, rng.choice(["v1", "v2"])])
    procs = {
        replica: await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            _REPLICA,
            redis_server.url,
            prefix,
            replica,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**python_env(), "PYTHONUNBUFFERED": "1"},
        )
        for replica in jobs
    }
    try:
        for replica, proc in procs.items():
            assert proc.stdin is not None
            proc.stdin.write((json.dumps(jobs[replica]) + "\n").encode())
            await proc.stdin.drain()
        for proc in procs.values():
            assert "ready" in await _line(proc)
        for proc in procs.values():  # as close to simultaneous as three pipes allow
            assert proc.stdin is not None
            proc.stdin.write(b"go\n")
        for proc in procs.values():
            assert proc.stdin is not None
            await proc.stdin.drain()
        outcomes: list[dict[str, Any]] = []
        heard: dict[str, dict[int, int]] = {replica: {} for replica in procs}
        pending: dict[str, list[dict[str, Any]]] = {replica: [] for replica in procs}
        for replica, proc in procs.items():
            while True:
                record = await _line(proc)
                if "outcomes" in record:
                    outcomes += [dict(o, replica=replica) for o in record["outcomes"]]
                    break
                pending[replica].append(record)  # a notice that beat the outcomes line
        expected = {replica: 0 for replica in procs}
        for outcome in outcomes:
            if outcome["kind"] == "Paired":
                expected[outcome["waiter"][0]] += 1
        for replica, proc in procs.items():
            records = pending[replica]
            while len(records) < expected[replica]:
                records.append(await _line(proc))
            for record in records:
                assert record["heard"] not in heard[replica], "a waiter was handed out twice"
                heard[replica][record["heard"]] = record["peer"][1]
        by_name: dict[str, list[dict[str, Any]]] = {}
        for outcome in outcomes:
            by_name.setdefault(outcome["name"], []).append(outcome)
        assert len(by_name) == names
        for name, sides in by_name.items():
            kinds = sorted(o["kind"] for o in sides)
            assert kinds == ["Paired", "Waiting"] + ["Waiting"] * (len(sides) - 2), name
            [paired] = [o for o in sides if o["kind"] == "Paired"]
            waiter_replica, waiter_port = paired["waiter"]
            # the waiter really was one of this name's waiting sides, on that replica
            assert any(
                o["kind"] == "Waiting"
                and o["replica"] == waiter_replica
                and o["port"] == waiter_port
                for o in sides
            ), name
            assert heard[waiter_replica][waiter_port] == paired["port"]
        assert sum(len(h) for h in heard.values()) == names
    finally:
        for proc in procs.values():
            if proc.returncode is None and proc.stdin is not None:
                proc.stdin.write(b"stop\n")
                proc.stdin.close()
        for proc in procs.values():
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()
