"""One place that makes boto3 clients, so every command honours --endpoint-url.

Credentials and region come from boto3's standard chain; ``endpoint_url`` aims every
client at an AWS emulator (moto's server mode in the tests).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Aws:
    """A boto3 session plus the endpoint override, handing out cached clients."""

    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def session(self) -> Any:
        import boto3  # deferred: boto3 is the optional `aws` extra

        return boto3.Session(profile_name=self.profile, region_name=self.region)

    @property
    def region_name(self) -> str:
        name = self.session.region_name
        if not name:
            raise RuntimeError(
                "no AWS region configured: pass --region, set AWS_REGION or "
                "AWS_DEFAULT_REGION, or set a region in ~/.aws/config"
            )
        return name

    def client(self, service: str) -> Any:
        if service not in self._clients:
            self._clients[service] = self.session.client(
                service, region_name=self.region_name, endpoint_url=self.endpoint_url
            )
        return self._clients[service]
