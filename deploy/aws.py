"""One place that makes boto3 clients, so every command honours --endpoint-url.

Credentials and region come from boto3's standard chain; ``endpoint_url`` aims every
client at an AWS emulator (moto's server mode in the tests).

Every client is wrapped so that an AWS error becomes a :class:`DeployError` that says
which IAM action was refused, and so that the actions a command used are recorded
(``Aws.actions``): the IAM policy files are checked against that record in the tests.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from typing import Any

ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "AuthorizationError",
        "AccessDeniedFault",
    }
)
_ACTION_IN_MESSAGE = re.compile(r"perform:? ([a-z0-9-]+:[A-Za-z0-9]+)")


class DeployError(RuntimeError):
    """A problem the user can act on: the message says what is wrong and what to do."""


class MissingPermission(DeployError):
    """AWS refused an action: ``action`` is the IAM action name, e.g. ``ecs:CreateService``."""

    def __init__(self, action: str, detail: str) -> None:
        self.action = action
        super().__init__(
            f"missing permission: {action} was denied ({detail}). Grant it to the deploying "
            f"identity; deploy/iam/deployer.json lists every action rendezvous-deploy uses."
        )


IAM_PREFIX = {"monitoring": "cloudwatch"}
"""Signing names whose IAM service prefix differs (CloudWatch signs as "monitoring")."""


def iam_action(client: Any, operation_name: str) -> str:
    """The IAM action for a boto3 operation: ``<IAM prefix>:<OperationName>``."""
    model = client.meta.service_model
    prefix = model.signing_name or model.endpoint_prefix
    return f"{IAM_PREFIX.get(prefix, prefix)}:{operation_name}"


def error_code(err: Exception) -> str:
    """The AWS error code of a botocore ClientError ('' for anything else)."""
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


def translate(err: Exception, action: str) -> Exception:
    """Turn an access-denied ClientError into MissingPermission; leave others alone."""
    response = getattr(err, "response", None) or {}
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    code = error_code(err)
    if code not in ACCESS_DENIED_CODES and not (status == 403 and code in ("", "403")):
        return err
    message = str(response.get("Error", {}).get("Message") or err)
    named = _ACTION_IN_MESSAGE.search(message)
    return MissingPermission(named.group(1) if named else action, message)


class _RecordingClient:
    """A boto3 client proxy: records each action called and translates access errors."""

    def __init__(self, client: Any, actions: set[str]) -> None:
        self._client = client
        self._actions = actions

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        operation = self._client.meta.method_to_api_mapping.get(name)
        if operation is None or not callable(attr):
            return attr
        action = iam_action(self._client, operation)

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Any:
            self._actions.add(action)
            try:
                return attr(*args, **kwargs)
            except Exception as err:
                translated = translate(err, action)
                if translated is err:
                    raise
                raise translated from err

        return call

    def get_paginator(self, operation: str) -> Any:
        api = self._client.meta.method_to_api_mapping.get(operation, operation)
        action = iam_action(self._client, api)
        self._actions.add(action)
        return _TranslatingPaginator(self._client.get_paginator(operation), action)


class _TranslatingPaginator:
    """A paginator whose pages raise MissingPermission like the client's calls do."""

    def __init__(self, paginator: Any, action: str) -> None:
        self._paginator = paginator
        self._action = action

    def paginate(self, **kwargs: Any) -> Any:
        try:
            yield from self._paginator.paginate(**kwargs)
        except Exception as err:
            translated = translate(err, self._action)
            if translated is err:
                raise
            raise translated from err


@dataclass
class Aws:
    """A boto3 session plus the endpoint override, handing out cached clients."""

    region: str | None = None
    endpoint_url: str | None = None
    profile: str | None = None
    actions: set[str] = field(default_factory=set, repr=False)
    _clients: dict[str, Any] = field(default_factory=dict, repr=False)

    @functools.cached_property
    def session(self) -> Any:
        import boto3  # deferred: boto3 is the optional `aws` extra

        # boto3 reads only AWS_DEFAULT_REGION; the AWS CLI and SDKs also honour AWS_REGION.
        region = self.region or os.environ.get("AWS_REGION") or None
        return boto3.Session(profile_name=self.profile, region_name=region)

    @property
    def region_name(self) -> str:
        name = self.session.region_name
        if not name:
            raise DeployError(
                "no AWS region configured: pass --region, set AWS_REGION or "
                "AWS_DEFAULT_REGION, or set a region in ~/.aws/config"
            )
        return name

    def client(self, service: str) -> Any:
        if service not in self._clients:
            raw = self.session.client(
                service, region_name=self.region_name, endpoint_url=self.endpoint_url
            )
            self._clients[service] = _RecordingClient(raw, self.actions)
        return self._clients[service]
