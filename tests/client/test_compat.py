"""fmi_client.compat runs an FMI-style worker unchanged but for its import."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import fmi_client.compat as fmi
from fmi_client import FmiClientError
from testbed.procs import free_port
from tests.client.ranks import REPO, RankResult, run_ranks
from tests.facilities import require


def write_config(path: Path, host: str, port: int, **direct: object) -> Path:
    """FMI's fmi.json as FMI's users write it (extra ``direct`` keys only when given)."""
    config = {
        "backends": {
            "Direct": {
                "enabled": True,
                "host": host,
                "port": port,
                "max_timeout": 1000,
                **direct,
            },
        },
        "model": {"Direct": {"resolve_host_dns": True}},
    }
    path.write_text(json.dumps(config))
    return path


def run_fmi_workers(config: Path, size: int = 3) -> list[RankResult]:
    # the worker uses comm_name "fmi_pair" like FMI's examples
    return run_ranks(
        lambda rank: ["-m", "tests.client.fmi_style_worker", str(config), str(rank), str(size)],
        size,
        timeout=90,
    )


@pytest.fixture(scope="module")
def reference_v1_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """benchmarks/server_reference.c (the original TCPunch server's design, v1 only); its port.

    Like the original it serves one connection at a time and stalls on a client that sends
    nothing, so the readiness probe sends a throwaway name.
    """
    require(shutil.which("gcc") is not None, "gcc (to build the v1-only reference server)")
    binary = tmp_path_factory.mktemp("v1server") / "server_reference"
    subprocess.run(
        ["gcc", "-O2", "-o", str(binary), str(REPO / "benchmarks" / "server_reference.c")],
        check=True,
        timeout=120,
    )
    port = free_port()
    proc = subprocess.Popen([str(binary), str(port)], stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1) as probe:
                    probe.sendall(b"probe_%d" % os.getpid())
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the v1 reference server did not start") from None
                time.sleep(0.05)
        yield port
    finally:
        proc.kill()
        proc.wait()


def test_fmi_style_worker_runs_unchanged(server, tmp_path: Path) -> None:
    """Against the project's server (it speaks v1 and v2), with fmi.json choosing v2."""
    size = 3
    config = write_config(tmp_path / "fmi.json", server.host, server.port, protocol="v2")
    results = run_fmi_workers(config, size)
    assert_fmi_semantics(results, size)


def test_fmi_style_worker_runs_unchanged_against_a_v1_only_server(
    reference_v1_server: int, tmp_path: Path
) -> None:
    """FMI's deployed servers speak v1 only: an fmi.json without a protocol must just work."""
    size = 3
    config = write_config(tmp_path / "fmi.json", "127.0.0.1", reference_v1_server)
    results = run_fmi_workers(config, size)
    assert_fmi_semantics(results, size)


def protocol_of(*args: object, **kwargs: object) -> str:
    """The rendezvous protocol a compat Communicator would pair with (it pairs lazily)."""
    with fmi.Communicator(*args, **kwargs) as comm:  # type: ignore[arg-type]
        return comm.communicator.protocol


def test_protocol_comes_from_fmi_json_or_the_keyword(tmp_path: Path) -> None:
    plain = write_config(tmp_path / "plain.json", "127.0.0.1", 1)
    v2 = write_config(tmp_path / "v2.json", "127.0.0.1", 1, protocol="v2")
    assert protocol_of(0, 2, plain, "p") == "v1"  # what FMI's server speaks
    assert protocol_of(0, 2, v2, "p") == "v2"
    assert protocol_of(0, 2, v2, "p", protocol="v1") == "v1"
    assert protocol_of(0, 2, plain, "p", 512, protocol="v2") == "v2"
    bad = write_config(tmp_path / "bad.json", "127.0.0.1", 1, protocol="v3")
    with pytest.raises(FmiClientError, match=r"backends\.Direct\.protocol"):
        fmi.Communicator(0, 2, bad, "p")
    with pytest.raises(ValueError, match="'v1' or 'v2'"):
        fmi.Communicator(0, 2, plain, "p", protocol="V2")


def assert_fmi_semantics(results: list[RankResult], size: int) -> None:
    """What FMI's documented semantics give for tests/client/fmi_style_worker.py."""
    assert all(r.returncode == 0 for r in results), [r.stderr[-1500:] for r in results]
    out = {r.rank: r.json()["out"] for r in results}
    assert out[1]["recv_int"] == 42 and isinstance(out[1]["recv_int"], int)
    assert out[1]["recv_list"] == [1.32, 2.34]
    assert out[1]["bcast"] == out[2]["bcast"] == 42
    assert out[0]["gather"] == [0, 0, 1, 10, 2, 20]
    assert out[1]["gather"] == out[2]["gather"] == []
    assert [out[r]["scatter"] for r in range(size)] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    assert out[0]["reduce"] == 6 and out[1]["reduce"] is None
    assert all(out[r]["allreduce"] == 3 for r in range(size))
    assert all(out[r]["allreduce_list"] == [2, 0] for r in range(size))
    # FMI's README: 3 * a + b over ids 0, 1, 2, neither associative nor commutative -> 5
    assert all(out[r]["custom"] == 5 for r in range(size))
    assert [out[r]["scan"] for r in range(size)] == [1.5, 3.0, 4.5]
    assert [out[r]["scan_custom"] for r in range(size)] == [0, 1, 5]


def test_config_without_direct_backend_is_explained(tmp_path: Path) -> None:
    config = tmp_path / "fmi.json"
    config.write_text(json.dumps({"backends": {"S3": {"enabled": True}}}))
    with pytest.raises(FmiClientError, match="Direct"):
        fmi.Communicator(0, 2, str(config), "x")
    with pytest.raises(FmiClientError, match="cannot read"):
        fmi.Communicator(0, 2, str(tmp_path / "missing.json"), "x")


def test_types_and_funcs_behave_like_fmi() -> None:
    assert fmi.types(fmi.datatypes.int).convert(3.0) == 3
    assert fmi.types(fmi.datatypes.double_list, 2).convert([1, 2]) == [1.0, 2.0]
    add = fmi.func(fmi.op.sum).for_type(fmi.types(fmi.datatypes.int_list, 2))
    assert add([1, 2], [10, 20]) == [11, 22]
    custom = fmi.func(fmi.op.custom, lambda a, b: 2 * a + b, True, True)
    assert custom.for_type(fmi.types(fmi.datatypes.int))(1, 2) == 4
    assert {h.name for h in fmi.hints} == {"fast", "cheap"}


def test_fmi_json_relay_always_relays_every_link(server, tmp_path: Path) -> None:
    """``backends.Direct.relay: "always"`` in an otherwise unchanged fmi.json (v1, as FMI's
    users have it): the FMI-style worker gets FMI's results through the server's relay."""
    metrics = server.server.relay.metrics
    started, relayed = metrics.started, metrics.bytes
    config = write_config(tmp_path / "fmi.json", server.host, server.port, relay="always")
    results = run_fmi_workers(config, 3)
    assert_fmi_semantics(results, 3)
    assert metrics.started == started + 3  # ranks 0-1, 0-2 and 1-2: each a relay session
    assert metrics.bytes - relayed >= 3 * 2 * 65536  # each link's check, both ways, at least


SHIM_WORKER = """
import json, sys
sys.path.insert(0, sys.argv[1])  # fmi_client/shim: `import fmi`, as FMI's workers have it
import fmi
config, rank = sys.argv[2], int(sys.argv[3])
comm = fmi.Communicator(rank, 2, config, "fmi_relay_" + sys.argv[4], 512)
comm.hint(fmi.hints.fast)
comm.barrier()
total = comm.allreduce(rank + 1, fmi.func(fmi.op.sum), fmi.types(fmi.datatypes.int))
links = {peer: link.path for peer, link in comm.communicator.links().items()}
comm.close()
print(json.dumps({"module": fmi.__name__, "total": total, "links": links}))
"""


@pytest.mark.parametrize(("relay", "path"), [("always", "relay"), ("never", "direct")])
def test_shim_takes_the_relay_setting_from_fmi_json(
    server, tmp_path: Path, relay: str, path: str
) -> None:
    config = write_config(tmp_path / "fmi.json", server.host, server.port, relay=relay)
    shim = REPO / "fmi_client" / "shim"
    tag = f"{relay}{os.getpid()}"
    results = run_ranks(
        lambda rank: ["-c", SHIM_WORKER, str(shim), str(config), str(rank), tag], 2, timeout=60
    )
    assert all(r.returncode == 0 for r in results), [r.stderr[-1500:] for r in results]
    got = [r.json() for r in results]
    assert [g["module"] for g in got] == ["fmi_client.compat"] * 2  # the shim is compat
    assert [g["total"] for g in got] == [3, 3]
    assert [g["links"] for g in got] == [{"1": path}, {"0": path}]


def relay_of(*args: object, **kwargs: object) -> str:
    """The relay setting a compat Communicator would pair with (it pairs lazily)."""
    with fmi.Communicator(*args, **kwargs) as comm:  # type: ignore[arg-type]
        return comm.communicator.relay


def test_relay_comes_from_the_keyword_fmi_json_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FMI_RELAY", raising=False)
    plain = write_config(tmp_path / "plain.json", "127.0.0.1", 1)
    never = write_config(tmp_path / "never.json", "127.0.0.1", 1, relay="never")
    null = write_config(tmp_path / "null.json", "127.0.0.1", 1, relay=None)
    assert relay_of(0, 2, plain, "p") == relay_of(0, 2, null, "p") == "auto"
    assert relay_of(0, 2, never, "p") == "never"
    assert relay_of(0, 2, never, "p", relay="always") == "always"  # the keyword beats fmi.json
    monkeypatch.setenv("FMI_RELAY", "always")
    assert relay_of(0, 2, plain, "p") == "always"  # only where fmi.json says nothing
    assert relay_of(0, 2, never, "p") == "never"
    with pytest.raises(ValueError, match="relay must be one of 'auto', 'never', 'always'"):
        fmi.Communicator(0, 2, plain, "p", relay="sometimes")


@pytest.mark.parametrize("bad", ["sometimes", "Always", "", 1, True])
def test_a_bad_relay_in_fmi_json_names_the_key_and_the_choices(tmp_path: Path, bad) -> None:
    config = tmp_path / "fmi.json"
    direct = {"enabled": True, "host": "127.0.0.1", "port": 1, "max_timeout": 1000}
    config.write_text(json.dumps({"backends": {"Direct": {**direct, "relay": bad}}}))
    with pytest.raises(FmiClientError) as info:
        fmi.Communicator(0, 2, config, "p")
    message = str(info.value)
    assert f"{str(config)!r}: backends.Direct.relay must be " in message
    assert '"auto" (punch, and relay through the server when that fails)' in message
    assert '"never" (punch only) or "always" (relay only)' in message
    assert message.endswith(f"not {bad!r}")


def test_a_bad_fmi_relay_variable_is_named(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FMI_RELAY", "off")
    plain = write_config(tmp_path / "plain.json", "127.0.0.1", 1)
    with pytest.raises(FmiClientError, match=r"\$FMI_RELAY must be \"auto\" .* not 'off'"):
        fmi.Communicator(0, 2, plain, "p")


def nat_of(*args: object, **kwargs: object) -> str:
    """The NAT declaration a compat Communicator would pair with (it pairs lazily)."""
    with fmi.Communicator(*args, **kwargs) as comm:  # type: ignore[arg-type]
        return comm.communicator.nat


def test_nat_comes_from_the_keyword_fmi_json_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("FMI_NAT", raising=False)
    plain = write_config(tmp_path / "plain.json", "127.0.0.1", 1)
    closed = write_config(tmp_path / "closed.json", "127.0.0.1", 1, nat="no-inbound")
    assert nat_of(0, 2, plain, "p") == "auto"
    assert nat_of(0, 2, closed, "p") == "no-inbound"
    assert nat_of(0, 2, closed, "p", nat="auto") == "auto"  # the keyword beats fmi.json
    monkeypatch.setenv("FMI_NAT", "no-inbound")
    assert nat_of(0, 2, plain, "p") == "no-inbound"
    monkeypatch.setenv("FMI_NAT", "closed")
    with pytest.raises(FmiClientError, match=r"\$FMI_NAT must be .*no-inbound.*not 'closed'"):
        fmi.Communicator(0, 2, plain, "p")
    bad = write_config(tmp_path / "bad.json", "127.0.0.1", 1, nat="symmetric")
    with pytest.raises(FmiClientError, match=r"backends.Direct.nat must be .*not 'symmetric'"):
        fmi.Communicator(0, 2, bad, "p")


def test_fmi_json_discovery_port_reaches_every_pairing(tmp_path: Path) -> None:
    """``backends.Direct.discovery_port``: a server whose NAT discovery is not on 10002
    (here: any free port) is probed where it answers, so the links know both NATs; a bad
    value names the key."""
    from rendezvous.embedded import BackgroundServer

    with BackgroundServer(host="127.0.0.1", port=0, http_port=None, discovery_port=0) as srv:
        assert srv.server is not None and srv.server.discovery_port
        config = write_config(tmp_path / "fmi.json", srv.host, srv.port, protocol="v2",
                              discovery_port=srv.server.discovery_port)  # fmt: skip
        name = f"fmi_disc{os.getpid()}"
        links: dict[int, object] = {}

        def rank(me: int) -> None:
            with fmi.Communicator(me, 2, str(config), name, 512) as comm:
                comm.barrier()
                links[me] = comm.communicator.link_info(1 - me)

        threads = [threading.Thread(target=rank, args=(me,)) for me in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    for me in range(2):
        link = links[me]
        assert link is not None, me
        assert (link.nat, link.peer_nat) == ("endpoint-independent",) * 2, link  # type: ignore[attr-defined]
    for bad in ("ten", -1, True):
        broken = write_config(tmp_path / "bad.json", "127.0.0.1", 1, discovery_port=bad)
        with pytest.raises(FmiClientError, match=r"backends.Direct.discovery_port"):
            fmi.Communicator(0, 2, broken, "p")
    off = write_config(tmp_path / "off.json", "127.0.0.1", 1, discovery_port=0)
    with fmi.Communicator(0, 2, off, "p") as comm:
        assert comm.communicator.discovery_port is None
