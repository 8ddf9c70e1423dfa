"""The client's rendezvous credential: where it comes from, what a refusal of it means.

A server started with an auth secret (``rendezvous serve --auth-secret-file``) lets only
holders of a credential for the name's prefix register names. ``pair(credential=...)``
(default ``$RENDEZVOUS_CREDENTIAL``) sends it with every v2 request (the first and each
token resume, ``tcpunch.v2credential``). It is a bearer token until it expires: no
error, log line or repr here contains it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from fmi_client.errors import RendezvousRefused
from tcpunch.credential import CREDENTIAL_ENV, parse

__all__ = ["CREDENTIAL_ENV", "credential_refused", "resolve_credential"]

_MINT_HINT = "mint one with `rendezvous credential --prefix P --ttl SECONDS`"


def resolve_credential(
    credential: str | None,
    protocol: str,
    name: str,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The credential to send for ``name``: ``credential``, else $RENDEZVOUS_CREDENTIAL,
    else None (the server may not need one).

    Raises ValueError (its text never holds the credential) when v1 is asked to carry one
    (it cannot), or when it is not a credential, or is for another prefix than ``name``'s.
    """
    where = "credential="
    if credential is None:
        found = (os.environ if environ is None else environ).get(CREDENTIAL_ENV, "").strip()
        if not found:
            return None
        credential, where = found, f"${CREDENTIAL_ENV}"
    if not isinstance(credential, str):
        raise TypeError(f"{where} is a str, not {type(credential).__name__}")
    if protocol == "v1":
        raise ValueError(
            f"v1 cannot carry a credential ({where} is set); use protocol='v2', or unset "
            "it if the server lets this v1 name on (--allow-v1)"
        )
    try:
        parsed = parse(credential)
    except ValueError as exc:
        raise ValueError(f"{where} is not a rendezvous credential: {exc}; {_MINT_HINT}") from None
    raw_name = name.encode("utf-8", "surrogatepass") if isinstance(name, str) else b""
    if not raw_name.startswith(parsed.prefix.encode("utf-8")):
        raise ValueError(
            f"{where} is for names starting with {parsed.prefix!r}, not for pairing {name!r}; "
            f"{_MINT_HINT}, with a prefix this name starts with"
        )
    return credential


def credential_refused(name: str, server: tuple[str, int]) -> RendezvousRefused:
    """The error for a v2 ERROR to a fresh request that carried a credential."""
    return RendezvousRefused(
        f"pairing {name!r}: the rendezvous server {server[0]}:{server[1]} refused the "
        "credential for this name: expired, forged (minted with another secret than the "
        f"server's), or not for this name's prefix; {_MINT_HINT} with the server's secret. "
        "(It may also have refused the request for another reason, e.g. --name-pattern or "
        "--max-waiting-per-ip; the server's log says which.)"
    )
