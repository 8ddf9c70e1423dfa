"""``fmi-layer``: build an AWS Lambda layer zip holding fmi_client and tcpunch.

Lambda unpacks a layer into /opt and puts /opt/python on sys.path, so the zip holds
``python/fmi_client/`` and ``python/tcpunch/``: pure Python, no compiled files, no
dependencies (numpy is used when the function has it, e.g. from another layer). The zip
is reproducible: fixed timestamps and order, so the same sources give the same bytes.

With ``--fmi-module`` the zip also holds ``python/fmi.py``, a top-level ``fmi`` module
that *is* ``fmi_client.compat``: a worker written for FMI (``import fmi``) runs unchanged.
With ``--with-crypto PYTHON_VERSION`` it also holds ``cryptography`` (and what it needs)
as pip downloads it, binary wheels only, for Lambda's platform (``--arch``): what
encrypted peer links need (fmi_client.securelink). Those files are not reproducible
across releases of cryptography; the rest of the zip is.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import click

PACKAGES = ("fmi_client", "tcpunch")
#: Build-time only modules that a function never imports (and that need click), and the
#: ``fmi`` shim, which goes in only on request and then at the top level.
EXCLUDE = {"fmi_client/layer.py", "fmi_client/shim/fmi.py"}
#: The source of the top-level ``fmi`` module and where it goes in the zip.
FMI_MODULE = ("fmi_client/shim/fmi.py", "python/fmi.py")
_EPOCH = (1980, 1, 1, 0, 0, 0)


def layer_files(fmi_module: bool = False) -> list[tuple[Path, str]]:
    """(source file, path inside the zip) for every file that goes into the layer."""
    root = Path(__file__).resolve().parent.parent
    files = []
    if fmi_module:
        files.append((root / FMI_MODULE[0], FMI_MODULE[1]))
    for package in PACKAGES:
        for source in sorted((root / package).rglob("*.py")):
            relative = source.relative_to(root).as_posix()
            if relative not in EXCLUDE and "__pycache__" not in relative:
                files.append((source, f"python/{relative}"))
    return files


#: Lambda's platforms, as pip's --platform tags (manylinux wheels that run there).
PLATFORMS = {
    "x86_64": ("manylinux2014_x86_64", "manylinux_2_28_x86_64", "manylinux_2_34_x86_64"),
    "arm64": ("manylinux2014_aarch64", "manylinux_2_28_aarch64", "manylinux_2_34_aarch64"),
}


def crypto_wheels(python_version: str, arch: str, into: Path) -> list[Path]:
    """cryptography and its dependencies as binary wheels for Lambda's ``arch`` and
    ``python_version`` (e.g. "3.12"), downloaded by pip into ``into``."""
    platforms = [arg for tag in PLATFORMS[arch] for arg in ("--platform", tag)]
    command = [
        sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
        "--only-binary=:all:", "--implementation", "cp", "--python-version", python_version,
        *platforms, "--dest", str(into), "cryptography>=42",
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise click.ClickException(
            f"could not download cryptography for Python {python_version} on {arch}: "
            f"{done.stderr.strip()[-800:]}"
        )
    return sorted(into.glob("*.whl"))


def build_layer(
    output: Path, fmi_module: bool = False, crypto: tuple[str, str] | None = None
) -> int:
    """Write the layer zip to ``output`` (with ``python/fmi.py`` if ``fmi_module``, and
    cryptography's wheels unpacked under ``python/`` if ``crypto`` = (python version,
    arch)); returns its size in bytes."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory() as tmp,
        zipfile.ZipFile(output, "w", compression=zipfile.ZIP_DEFLATED) as archive,
    ):
        for source, arcname in layer_files(fmi_module):
            info = zipfile.ZipInfo(arcname, date_time=_EPOCH)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, source.read_bytes())
        for wheel in crypto_wheels(*crypto, Path(tmp)) if crypto else []:
            with zipfile.ZipFile(wheel) as unpacked:
                for member in unpacked.infolist():
                    if not member.is_dir():
                        info = zipfile.ZipInfo(f"python/{member.filename}", date_time=_EPOCH)
                        info.compress_type = zipfile.ZIP_DEFLATED
                        info.external_attr = member.external_attr or 0o644 << 16
                        archive.writestr(info, unpacked.read(member))
    return output.stat().st_size


@click.group(help="Build the AWS Lambda layer of fmi_client (pure Python, no dependencies).")
def main() -> None:
    pass


@main.command(help="Write a layer zip (python/fmi_client, python/tcpunch) for Lambda.")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=Path("fmi-layer.zip"),
    show_default=True,
    help="Where to write the zip.",
)
@click.option(
    "--fmi-module",
    is_flag=True,
    help="Also add python/fmi.py: `import fmi` gives fmi_client.compat, so a worker "
    "written for FMI runs unchanged.",
)
@click.option(
    "--with-crypto",
    "crypto_python",
    metavar="PYTHON_VERSION",
    default=None,
    help="Also add cryptography (binary wheels for Lambda's platform and this Python, "
    "e.g. 3.12), which encrypted peer links need; pip downloads it.",
)
@click.option(
    "--arch",
    type=click.Choice(sorted(PLATFORMS)),
    default="x86_64",
    show_default=True,
    help="Lambda's architecture, for --with-crypto.",
)
def build(output: Path, fmi_module: bool, crypto_python: str | None, arch: str) -> None:
    crypto = (crypto_python, arch) if crypto_python else None
    size = build_layer(output, fmi_module, crypto)
    with zipfile.ZipFile(output) as archive:
        count = len(archive.namelist())
    click.echo(f"wrote {output} ({size / 1024:.1f} KiB, {count} files)")
    click.echo(
        "publish it with: aws lambda publish-layer-version --layer-name fmi-client "
        f"--zip-file fileb://{output} --compatible-runtimes python3.10 python3.11 python3.12"
    )


if __name__ == "__main__":
    main()
