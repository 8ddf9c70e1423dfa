"""The pipeline's Lambda functions and layer, reconciled to the wanted configuration."""

from __future__ import annotations

import time
from typing import Any

from rendezvous_deploy import roles
from rendezvous_deploy.aws import Aws, DeployError, error_code
from rendezvous_deploy.pipeline.bundles import RUNTIME, sha256_b64


def ensure_layer(aws: Aws, name: str, content: bytes) -> tuple[str, bool]:
    """The layer version holding ``content``; publishes a new one only when it changed."""
    lam = aws.client("lambda")
    digest = sha256_b64(content)
    try:
        versions = lam.list_layer_versions(LayerName=name).get("LayerVersions", [])
    except Exception as err:
        if error_code(err) != "ResourceNotFoundException":
            raise
        versions = []
    for version in versions:
        if version.get("Description", "").endswith(digest):
            return str(version["LayerVersionArn"]), False
    published = lam.publish_layer_version(
        LayerName=name,
        Description=f"fmi_client for rendezvous pipeline sha256:{digest}",
        Content={"ZipFile": content},
        CompatibleRuntimes=[RUNTIME],
    )
    return str(published["LayerVersionArn"]), True


def _wait_updated(lam: Any, name: str, deadline_s: float = 120.0) -> None:
    """Lambda refuses a second update while the first is in progress: wait it out."""
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        config = lam.get_function_configuration(FunctionName=name)
        if (
            config.get("LastUpdateStatus", "Successful") != "InProgress"
            and config.get("State", "Active") != "Pending"
        ):
            return
        time.sleep(1)
    raise DeployError(f"Lambda {name} is still updating after {deadline_s:.0f} s; retry `up`")


def _variables(config: dict[str, Any]) -> dict[str, str]:
    return dict((config.get("Environment") or {}).get("Variables") or {})


def ensure_function(
    aws: Aws, name: str, spec: dict[str, Any], on_change: roles.Change | None = None
) -> tuple[str, bool]:
    """Create ``name`` from ``spec`` (create_function arguments) or bring it up to date;
    each changed setting goes to ``on_change`` as old -> new."""
    report: roles.Change = on_change or (lambda _what, _old, _new: None)
    lam = aws.client("lambda")
    try:
        current = lam.get_function(FunctionName=name)
    except Exception as err:
        if error_code(err) != "ResourceNotFoundException":
            raise
        created = lam.create_function(FunctionName=name, **spec)
        return str(created["FunctionArn"]), True
    config = current["Configuration"]
    changed = False
    code = spec["Code"]
    if "ZipFile" in code and config.get("CodeSha256") != sha256_b64(code["ZipFile"]):
        lam.update_function_code(FunctionName=name, ZipFile=code["ZipFile"])
        changed = True
    if "ImageUri" in code and current.get("Code", {}).get("ImageUri") != code["ImageUri"]:
        lam.update_function_code(FunctionName=name, ImageUri=code["ImageUri"])
        report(f"function {name} image", current.get("Code", {}).get("ImageUri"), code["ImageUri"])
        changed = True
    wanted = {k: spec[k] for k in ("Role", "Timeout", "MemorySize", "Environment") if k in spec}
    if "Environment" in wanted:  # as get_function reports it ({} or absent: none)
        config = {**config, "Environment": {"Variables": _variables(config)}}
    layers = spec.get("Layers")
    have_layers = [layer["Arn"] for layer in config.get("Layers", [])]
    for key, value in wanted.items():
        if config.get(key) != value:
            report(f"function {name} {key}", config.get(key), value)
    if layers is not None and have_layers != layers:
        report(f"function {name} layers", ", ".join(have_layers), ", ".join(layers))
    if any(config.get(k) != v for k, v in wanted.items()) or (
        layers is not None and have_layers != layers
    ):
        if changed:
            _wait_updated(lam, name)
        extra = {"Layers": layers} if layers is not None else {}
        lam.update_function_configuration(FunctionName=name, **wanted, **extra)
        changed = True
    return str(config["FunctionArn"]), changed
