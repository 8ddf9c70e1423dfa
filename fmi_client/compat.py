"""A drop-in for FMI's Python module: ``import fmi_client.compat as fmi`` and nothing else changes.

It reads FMI's ``fmi.json`` (``backends.Direct``: host, port, max_timeout in ms;
``model.Direct.resolve_host_dns``) and maps FMI's calls, argument orders and
``types``/``func`` descriptors onto :class:`fmi_client.Communicator`. Differences that
fix FMI's field problems: ``max_timeout`` bounds *pairing* only (never below
MIN_PAIRING_TIMEOUT, so a cold start is waited for) and is not applied as a socket
timeout to data transfers; custom functions that are declared non-associative or
non-commutative are folded strictly left to right in rank order.

FMI's Lambdas meet at the original TCPunch server, which speaks protocol v1 only, so v1
is the default here; ``backends.Direct.protocol: "v2"`` in fmi.json (or the keyword
``protocol="v2"``) selects the fork's protocol, which the project's server also speaks.
A server started with an auth secret needs v2 and a credential: ``backends.Direct.credential``
in fmi.json, else ``$RENDEZVOUS_CREDENTIAL`` (better: fmi.json is often committed).
The job secret that authenticates (and encrypts) the links between ranks likewise:
``backends.Direct.secret`` (and ``encrypt``, default true), else ``$FMI_SECRET``. FMI's
own C++ workers run no handshake: they pair only with ranks that have no secret.
Whether links may go through the server's relay: ``backends.Direct.relay`` ("auto",
the default, "never" or "always"), else ``$FMI_RELAY``; the keyword ``relay=`` beats both.
A function platform that accepts no inbound connection says so the same way:
``backends.Direct.nat: "no-inbound"`` (or ``$FMI_NAT``, or ``nat=``), so its pairs relay
at once instead of punching first. ``backends.Direct.discovery_port`` is the server's NAT
discovery port (default 10002; 0 or null: no probe).
"""

from __future__ import annotations

import enum
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from fmi_client.address import DEFAULT_PORT, check_host, check_port
from fmi_client.communicator import Communicator as _Communicator
from fmi_client.errors import FmiClientError
from fmi_client.handshake import LinkSecret
from fmi_client.natpath import DEFAULT_DISCOVERY_PORT, NAT_CHOICES
from fmi_client.ops import Op
from fmi_client.punch import RELAY_MODES

#: Seconds a pairing may wait at least, whatever fmi.json's max_timeout says (FMI's
#: default of 1000 ms made every cold start a failure).
MIN_PAIRING_TIMEOUT = 60.0
#: FMI's server (the original TCPunch) speaks v1 only; an unchanged worker must too.
DEFAULT_PROTOCOL = "v1"
PROTOCOLS = ("v1", "v2")
#: Where the relay setting comes from when fmi.json has no ``backends.Direct.relay``.
RELAY_ENV = "FMI_RELAY"
#: The relay settings, as an error message lists them.
RELAY_CHOICES = (
    '"auto" (punch, and relay through the server when that fails), "never" (punch only) '
    'or "always" (relay only)'
)
#: Where the NAT declaration comes from when fmi.json has no ``backends.Direct.nat``.
NAT_ENV = "FMI_NAT"
NAT_TEXT = (
    '"auto" (found out by NAT discovery), "no-inbound" (this host accepts no inbound '
    'connection), "port-dependent" or "endpoint-independent"'
)
#: fmi.json's optional choices: key -> (allowed values, how an error lists them, env).
CHOICES = {
    "relay": (RELAY_MODES, RELAY_CHOICES, RELAY_ENV),
    "nat": (NAT_CHOICES, NAT_TEXT, NAT_ENV),
}


class datatypes(enum.Enum):
    int = "int"
    double = "double"
    int_list = "int_list"
    double_list = "double_list"


class op(enum.Enum):
    sum = "sum"
    prod = "prod"
    max = "max"
    min = "min"
    custom = "custom"


#: FMI's named operations on scalars (lists are folded element by element).
_SCALAR: dict[op, Callable[[Any, Any], Any]] = {
    op.sum: lambda a, b: a + b,
    op.prod: lambda a, b: a * b,
    op.max: max,
    op.min: min,
}


class hints(enum.Enum):
    fast = "fast"
    cheap = "cheap"


@dataclass(frozen=True)
class types:
    """What a call carries: ``types(datatypes.int)`` or ``types(datatypes.int_list, n)``."""

    datatype: datatypes
    num_objects: int = 1

    @property
    def is_list(self) -> bool:
        return self.datatype in (datatypes.int_list, datatypes.double_list)

    def convert(self, value: Any) -> Any:
        """The value as FMI returns it (int, float or a list of them)."""
        if value is None:
            return None
        scalar = int if self.datatype in (datatypes.int, datatypes.int_list) else float
        if self.is_list:
            return [scalar(v) for v in value]
        return scalar(value)


class func:
    """A reduction: ``func(op.sum)`` or ``func(op.custom, f, commutative, associative)``.

    ``operation`` may also be an ``fmi_client.ops.Op`` (``func(ops.MAX)``, or
    ``func(Op.create(f, commute=False))``, whose ``commute`` then sets ``commutative``).
    """

    def __init__(
        self,
        operation: op | Op,
        function: Callable[[Any, Any], Any] | None = None,
        commutative: bool = True,
        associative: bool = True,
    ) -> None:
        if operation is op.custom and function is None:
            raise ValueError("func(op.custom, ...) needs the function f(a, b) as second argument")
        if isinstance(operation, Op):
            commutative = commutative and operation.commute
        self.op = operation
        self.function = function
        self.commutative = commutative
        self.associative = associative

    def scalar(self) -> Callable[[Any, Any], Any]:
        if isinstance(self.op, Op):
            return self.op
        if self.op is op.custom:
            assert self.function is not None  # checked in __init__
            return self.function
        return _SCALAR[self.op]

    def for_type(self, kind: types) -> Callable[[Any, Any], Any]:
        """The binary function on the values of ``kind`` (lists element-wise, as FMI)."""
        scalar = self.scalar()
        if kind.is_list:
            return lambda a, b: [scalar(x, y) for x, y in zip(a, b, strict=True)]
        return scalar


class _Config(NamedTuple):
    host: str
    port: int
    timeout: float
    protocol: str
    credential: str | None
    secret: LinkSecret | None  # None: $FMI_SECRET, if set
    encrypt: bool
    relay: str | None  # None: $FMI_RELAY, else "auto"
    nat: str | None  # None: $FMI_NAT, else "auto"
    discovery_port: int | None  # the server's NAT discovery port; None: no probe


def _read_config(path: str | os.PathLike[str]) -> _Config:
    try:
        with open(path, encoding="utf-8") as handle:
            config = json.load(handle)
    except OSError as exc:
        raise FmiClientError(f"cannot read the FMI config {os.fspath(path)!r}: {exc}") from exc
    except json.JSONDecodeError as exc:
        raise FmiClientError(f"the FMI config {os.fspath(path)!r} is not JSON: {exc}") from exc
    direct = config.get("backends", {}).get("Direct")
    if not direct or not direct.get("enabled", True):
        raise FmiClientError(
            f"{os.fspath(path)!r} has no enabled backends.Direct section; fmi_client.compat "
            "implements FMI's Direct (TCPunch) channel only"
        )
    if "host" not in direct:
        raise FmiClientError(f"{os.fspath(path)!r}: backends.Direct needs a 'host'")
    timeout_ms = float(direct.get("max_timeout", 1000))
    timeout = max(timeout_ms / 1000.0, MIN_PAIRING_TIMEOUT)
    protocol = direct.get("protocol", DEFAULT_PROTOCOL)
    if protocol not in PROTOCOLS:
        raise FmiClientError(
            f'{os.fspath(path)!r}: backends.Direct.protocol must be "v1" (the original '
            f"TCPunch server, FMI's) or \"v2\" (the fork's), not {protocol!r}"
        )
    try:
        host = check_host(direct["host"], "backends.Direct.host")
        port = check_port(direct.get("port", DEFAULT_PORT), "backends.Direct.port")
    except (TypeError, ValueError) as exc:
        raise FmiClientError(f"{os.fspath(path)!r}: {exc}") from None
    credential = direct.get("credential")
    if credential is not None and not (isinstance(credential, str) and credential):
        raise FmiClientError(
            f"{os.fspath(path)!r}: backends.Direct.credential must be a non-empty string "
            "(printed by `rendezvous credential --prefix P`), or absent"
        )
    secret, encrypt = direct.get("secret"), direct.get("encrypt", True)
    if not isinstance(encrypt, bool):
        raise FmiClientError(f"{os.fspath(path)!r}: backends.Direct.encrypt must be true or false")
    if secret is not None:
        try:
            if not isinstance(secret, str):
                raise ValueError("it must be a string")
            secret = LinkSecret(secret)
        except ValueError as exc:  # the text never holds the secret
            raise FmiClientError(
                f"{os.fspath(path)!r}: backends.Direct.secret is not usable: {exc}"
            ) from None
    discovery = direct.get("discovery_port", DEFAULT_DISCOVERY_PORT)
    try:
        discovery = check_port(discovery, "backends.Direct.discovery_port") if discovery else None
    except (TypeError, ValueError) as exc:
        raise FmiClientError(
            f"{os.fspath(path)!r}: {exc} (the server's --discovery-port; 0 or null: no "
            "NAT discovery)"
        ) from None
    chosen: dict[str, str | None] = {}
    for key, (allowed, text, _) in CHOICES.items():
        value = chosen[key] = direct.get(key)
        if value is not None and (not isinstance(value, str) or value not in allowed):
            raise FmiClientError(
                f"{os.fspath(path)!r}: backends.Direct.{key} must be {text}, not {value!r}"
            )
    return _Config(
        host, port, timeout, protocol, credential, secret, encrypt, chosen["relay"], chosen["nat"],
        discovery,
    )  # fmt: skip


def _choice(key: str, keyword: str | None, configured: str | None) -> str:
    """A setting of CHOICES: the keyword, else fmi.json's, else its environment variable,
    else "auto"."""
    if keyword is not None:
        return keyword  # checked by fmi_client.Communicator (ValueError)
    if configured is not None:
        return configured
    allowed, text, env = CHOICES[key]
    from_env = os.environ.get(env, "").strip()
    if from_env and from_env not in allowed:
        raise FmiClientError(f"${env} must be {text}, not {from_env!r}")
    return from_env or "auto"


class Communicator:
    """FMI's ``fmi.Communicator(peer_id, num_peers, config_path, comm_name, faas_memory)``.

    ``protocol`` ("v1" or "v2", a keyword FMI does not have) overrides fmi.json's
    ``backends.Direct.protocol``; without either it is "v1", what FMI's server speaks.
    ``relay`` ("auto", "never", "always"; nor FMI's) likewise overrides
    ``backends.Direct.relay``, else ``$FMI_RELAY``, else "auto";
    ``communicator.links()`` tells which path each link took. ``nat`` (nor FMI's)
    overrides ``backends.Direct.nat``, else ``$FMI_NAT``, else "auto".
    """

    def __init__(
        self,
        peer_id: int,
        num_peers: int,
        config_path: str | os.PathLike[str],
        comm_name: str,
        faas_memory: int = 128,
        *,
        protocol: str | None = None,
        relay: str | None = None,
        nat: str | None = None,
    ) -> None:
        config = _read_config(config_path)
        credential = config.credential
        if protocol is None:
            protocol = config.protocol
        elif protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be 'v1' or 'v2', not {protocol!r}")
        if credential is not None and protocol == "v1":
            raise FmiClientError(
                f"{os.fspath(config_path)!r}: backends.Direct.credential needs protocol v2 "
                '(v1 cannot carry one): set backends.Direct.protocol to "v2"'
            )
        # model.Direct.resolve_host_dns: we always resolve host names (IPs pass through).
        self.faas_memory = faas_memory
        self.hint_value = hints.fast
        self.peer_id = peer_id
        self.num_peers = num_peers
        self._comm = _Communicator(
            peer_id,
            num_peers,
            f"{config.host}:{config.port}",
            comm_name,
            timeout=config.timeout,
            protocol=protocol,
            credential=credential,  # None: $RENDEZVOUS_CREDENTIAL, if set
            secret=config.secret,  # None: $FMI_SECRET, if set
            encrypt=config.encrypt,
            relay=_choice("relay", relay, config.relay),
            nat=_choice("nat", nat, config.nat),
            discovery_port=config.discovery_port,
        )

    @property
    def communicator(self) -> _Communicator:
        """The underlying fmi_client.Communicator (for code that outgrows FMI's API)."""
        return self._comm

    def hint(self, value: hints) -> None:
        """FMI picks a channel by hint; there is one channel here, so it is recorded only."""
        self.hint_value = value

    def send(self, obj: Any, dst: int, kind: types) -> None:
        self._comm.send(kind.convert(obj), dst)

    def recv(self, src: int, kind: types) -> Any:
        return kind.convert(self._comm.recv(src, 0))

    def bcast(self, obj: Any, root: int, kind: types) -> Any:
        mine = kind.convert(obj) if self.peer_id == root else None
        return kind.convert(self._comm.bcast(mine, root))

    def barrier(self) -> None:
        self._comm.barrier()

    def gather(self, obj: Any, root: int, kind: types) -> list[Any]:
        """A flat list on root (lists concatenated in rank order), [] elsewhere."""
        got = self._comm.gather(kind.convert(obj), root)
        if got is None:
            return []
        if kind.is_list:
            return [value for part in got for value in part]
        return got

    def scatter(self, objs: Any, root: int, kind: types) -> Any:
        """Root's list split into num_peers equal parts; each rank gets its part (a list)."""
        parts = None
        if self.peer_id == root:
            values = kind.convert(objs) if kind.is_list else list(objs)
            if len(values) % self.num_peers:
                raise ValueError(
                    f"scatter: {len(values)} values do not split evenly over {self.num_peers} peers"
                )
            each = len(values) // self.num_peers
            parts = [values[i * each : (i + 1) * each] for i in range(self.num_peers)]
        return kind.convert(self._comm.scatter(parts, root))

    def _ordered(self, how: func) -> bool:
        return how.op is op.custom and not how.associative

    def reduce(self, obj: Any, root: int, how: func, kind: types) -> Any:
        value, fold = kind.convert(obj), how.for_type(kind)
        if self._ordered(how):  # non-associative: strictly ((x0 f x1) f x2) ...
            got = self._comm.gather(value, root)
            return None if got is None else kind.convert(_fold_left(fold, got))
        got = self._comm.reduce(value, fold, root, commutative=how.commutative)
        return None if got is None else kind.convert(got)

    def allreduce(self, obj: Any, how: func, kind: types) -> Any:
        value, fold = kind.convert(obj), how.for_type(kind)
        if self._ordered(how):
            got = self._comm.gather(value, 0)
            result = _fold_left(fold, got) if got is not None else None
            return kind.convert(self._comm.bcast(result, 0))
        return kind.convert(self._comm.allreduce(value, fold, commutative=how.commutative))

    def scan(self, obj: Any, how: func, kind: types) -> Any:
        value, fold = kind.convert(obj), how.for_type(kind)
        if self._ordered(how):  # a chain: rank r folds its value onto rank r-1's prefix
            rank = self.peer_id
            prefix = value if rank == 0 else fold(self._comm.recv(rank - 1, 1), value)
            if rank + 1 < self.num_peers:
                self._comm.send(prefix, rank + 1, 1)
            return kind.convert(prefix)
        return kind.convert(self._comm.scan(value, fold, commutative=how.commutative))

    def close(self) -> None:
        self._comm.close()

    def __enter__(self) -> Communicator:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __del__(self) -> None:
        comm = getattr(self, "_comm", None)
        if comm is not None:
            comm.close()


def _fold_left(fold: Callable[[Any, Any], Any], values: list[Any]) -> Any:
    result = values[0]
    for value in values[1:]:
        result = fold(result, value)
    return result
