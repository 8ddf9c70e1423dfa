"""What one run's ranks hold to meet: a rendezvous credential and a job secret, per run.

Initialize makes both. The credential is minted from the server's auth secret (read
from Secrets Manager, ``$RENDEZVOUS_AUTH_SECRET_ARN``; none when the server runs without
auth) for the run's pairing names only: ranks pair as ``<comm_name>#<lo>-<hi>``, so the
prefix is ``<comm_name>#`` (with the separator, run ``r1`` does not cover ``r10``). The
job secret (``FMI_SECRET``) is fresh random bytes, so ranks of one run talk only to each
other once peer links check it. Neither is written to storage, results or logs: they
travel beside the Map items (the state machine's ItemSelector), never inside
``items.json``.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Mapping
from typing import Any

CREDENTIAL_FIELD = "RENDEZVOUS_CREDENTIAL"  # tcpunch.credential.CREDENTIAL_ENV
JOB_SECRET_FIELD = "FMI_SECRET"
AUTH_FIELDS = (CREDENTIAL_FIELD, JOB_SECRET_FIELD)
#: Initialize's environment: the ARN of the server's auth secret (set by `pipeline up`).
SECRET_ARN_ENV = "RENDEZVOUS_AUTH_SECRET_ARN"
#: Seconds a run's credential lasts (Initialize's environment may change it). A rank
#: registers while it pairs; an hour covers a 15-minute worker and the Map's start-up.
TTL_ENV = "RENDEZVOUS_CREDENTIAL_TTL"
DEFAULT_TTL_S = 3600
JOB_SECRET_BYTES = 32


def credential_prefix(comm_name: str) -> str:
    """The names a run's credential covers: its pairings ``<comm_name>#<lo>-<hi>``."""
    return f"{comm_name}#"


def server_secret(arn: str) -> bytes:
    """The current auth secret (the first line: it mints) from Secrets Manager."""
    import boto3  # in the Lambda runtime; deferred so local runs need no AWS

    value = boto3.client("secretsmanager").get_secret_value(SecretId=arn)["SecretString"]
    lines = [line.strip() for line in str(value).splitlines() if line.strip()]
    if not lines:
        raise ValueError(f"the auth secret {arn} is empty: put a random value in it")
    return lines[0].encode("utf-8")


def run_auth(
    comm_name: str, secret: bytes | None, ttl: int = DEFAULT_TTL_S, now: float | None = None
) -> dict[str, str]:
    """A fresh job secret, and a credential for ``comm_name``'s pairings when the server
    has an auth secret (``secret``; None: the server runs without auth)."""
    from tcpunch.credential import mint  # the fmi_client layer ships tcpunch

    auth = {JOB_SECRET_FIELD: secrets.token_urlsafe(JOB_SECRET_BYTES)}
    if secret is not None:
        stamp = time.time() if now is None else now
        auth[CREDENTIAL_FIELD] = mint(secret, credential_prefix(comm_name), ttl, stamp)
    return auth


def auth_from_environment(
    comm_name: str, environ: Mapping[str, str] | None = None
) -> dict[str, str]:
    """What Initialize hands the ranks: minted from the secret its environment names."""
    env = os.environ if environ is None else environ
    arn = env.get(SECRET_ARN_ENV, "").strip()
    ttl = int(env.get(TTL_ENV) or DEFAULT_TTL_S)
    return run_auth(comm_name, server_secret(arn) if arn else None, ttl)


def with_auth(event: Mapping[str, Any]) -> dict[str, Any]:
    """A rank's item: the Map's ``{"item": ..., "auth": ...}`` (ItemSelector) merged, or
    the item as it came (a local run passes the auth in the environment instead)."""
    item = event.get("item")
    if isinstance(item, dict) and set(event) <= {"item", "auth"}:
        auth = event.get("auth") or {}
        return {**item, **{k: str(v) for k, v in auth.items() if k in AUTH_FIELDS}}
    return dict(event)


def without_auth(item: Mapping[str, Any]) -> dict[str, Any]:
    """``item`` with no credential or secret in it: what may be shown, logged or stored."""
    return {k: v for k, v in item.items() if k not in AUTH_FIELDS}


def rank_auth(item: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """A rank's credential and job secret: from its item, else its environment."""
    env = os.environ if environ is None else environ
    found = {}
    for field in AUTH_FIELDS:
        value = item.get(field) or env.get(field)
        if value:
            found[field] = str(value)
    return found
