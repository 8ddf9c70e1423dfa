"""The Lambda layer zip: pure Python, the python/ layout, and it works from the zip alone."""

from __future__ import annotations

import json
import subprocess
import sys
import zipfile
from pathlib import Path

from click.testing import CliRunner

from fmi_client.layer import build_layer, main

SNIPPET = """
import sys, threading
sys.modules["numpy"] = None  # a bare Lambda runtime: no numpy, fmi_client must not need it
sys.path.insert(0, sys.argv[1] + "/python")
import fmi_client, tcpunch
assert fmi_client.__file__.startswith(sys.argv[1]), fmi_client.__file__
assert tcpunch.__file__.startswith(sys.argv[1]), tcpunch.__file__
assert "click" not in sys.modules
socks = []
def go():
    socks.append(fmi_client.pair("layer-" + sys.argv[4], sys.argv[2], int(sys.argv[3]), timeout=20))
threads = [threading.Thread(target=go) for _ in range(2)]
[t.start() for t in threads]; [t.join() for t in threads]
socks[0].sendall(b"from the layer")
print(socks[1].recv(64).decode())
with fmi_client.Communicator(0, 1, sys.argv[2] + ":" + sys.argv[3], "solo") as comm:
    print(comm.allreduce(21, "sum") * 2)
    print(comm.bcast([1, 2.5, "x"]))
"""


def test_layer_is_pure_python_in_the_python_layout(tmp_path: Path) -> None:
    out = tmp_path / "layer.zip"
    result = CliRunner().invoke(main, ["build", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "KiB" in result.output
    names = zipfile.ZipFile(out).namelist()
    assert "python/fmi_client/__init__.py" in names
    assert "python/tcpunch/v2.py" in names
    assert all(name.startswith(("python/fmi_client/", "python/tcpunch/")) for name in names)
    assert all(name.endswith(".py") for name in names)
    assert "python/fmi_client/layer.py" not in names
    again = tmp_path / "again.zip"
    build_layer(again)
    assert again.read_bytes() == out.read_bytes()  # reproducible


def test_layer_works_without_the_repository(server, tmp_path: Path) -> None:
    out = tmp_path / "layer.zip"
    build_layer(out)
    result = subprocess.run(
        [
            sys.executable,
            "-I",
            "-c",
            SNIPPET,
            str(out),
            server.host,
            str(server.port),
            str(tmp_path.name),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split("\n")[:3] == ["from the layer", "42", "[1, 2.5, 'x']"]


FMI_SNIPPET = """
import json, sys, threading
sys.modules["numpy"] = None
sys.path.insert(0, sys.argv[1] + "/python")
import fmi  # FMI's module name: the layer's top-level shim
import fmi_client.compat
assert fmi is fmi_client.compat, fmi
assert fmi.__file__.startswith(sys.argv[1]), fmi.__file__
config = sys.argv[2]
out = {}
def rank(r, size=2):
    comm = fmi.Communicator(r, size, config, "fmi_pair", 512)
    comm.hint(fmi.hints.fast)
    comm.barrier()
    out[r] = comm.reduce(1.25 * (r + 1), 0, fmi.func(fmi.op.sum), fmi.types(fmi.datatypes.double))
    comm.close()
threads = [threading.Thread(target=rank, args=(r,)) for r in range(2)]
[t.start() for t in threads]; [t.join() for t in threads]
print(json.dumps(out, sort_keys=True))
"""


def test_fmi_module_layer_runs_fmi_code_unchanged(server, tmp_path: Path) -> None:
    """--fmi-module adds python/fmi.py; `import fmi` from the zip alone is fmi_client.compat."""
    out = tmp_path / "layer.zip"
    result = CliRunner().invoke(main, ["build", "-o", str(out), "--fmi-module"])
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "unzipped")
    assert "python/fmi.py" in names
    assert "python/fmi_client/compat.py" in names
    assert not any(name.startswith("python/fmi_client/shim") for name in names)
    plain = tmp_path / "plain.zip"
    build_layer(plain)
    assert "python/fmi.py" not in zipfile.ZipFile(plain).namelist()  # only on request
    config = tmp_path / "fmi.json"
    direct = {"enabled": True, "host": server.host, "port": server.port, "max_timeout": 1000}
    config.write_text(json.dumps({"backends": {"Direct": direct}}))
    ran = subprocess.run(
        [sys.executable, "-I", "-c", FMI_SNIPPET, str(tmp_path / "unzipped"), str(config)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {"0": 3.75, "1": None}  # 1.25 + 2.5 on rank 0


def test_with_crypto_layer_encrypts_links_without_anything_installed(tmp_path: Path) -> None:
    """`fmi-layer build --with-crypto 3.11`: pip fetches cryptography's binary wheels for
    Lambda's platform into the zip; a Python without site-packages (nothing installed, as
    in a bare Lambda) then makes its TLS certificate from the layer's copy."""
    import platform

    out = tmp_path / "crypto-layer.zip"
    py = f"{sys.version_info.major}.{sys.version_info.minor}"
    arch = {"x86_64": "x86_64", "aarch64": "arm64"}[platform.machine()]
    result = CliRunner().invoke(
        main, ["build", "-o", str(out), "--with-crypto", py, "--arch", arch]
    )
    assert result.exit_code == 0, result.output
    with zipfile.ZipFile(out) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "opt")
    assert "python/cryptography/__init__.py" in names and "python/fmi_client/securelink.py" in names
    layer = tmp_path / "opt" / "python"
    probe = (
        "import sys; sys.path.insert(0, sys.argv[1]); import cryptography, fmi_client.securelink"
        " as s; s.require_encryption(); s._Identity(); print(cryptography.__file__)"
    )
    run = subprocess.run(
        [sys.executable, "-S", "-c", probe, str(layer)], capture_output=True, text=True, timeout=60
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().startswith(str(layer)), run.stdout


def test_with_crypto_refuses_an_unknown_architecture(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build", "-o", str(tmp_path / "x.zip"), "--with-crypto",
                                       "3.12", "--arch", "sparc"])  # fmt: skip
    assert result.exit_code == 2 and "sparc" in result.output
