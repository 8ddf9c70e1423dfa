"""The task execution role can pull the image `up` is given, and nothing else.

Against a moto server process: the role policy `up` attaches names the repository of
``--image-uri`` (any name, account or region), and an image outside ECR gets no ECR
rights at all; a later `up` with another image replaces the grant, it does not add one.
"""

from __future__ import annotations

from typing import Any

import boto3

from rendezvous_deploy.server import commands
from rendezvous_deploy.server.iam import execution_policy
from rendezvous_deploy.server.settings import ServerSettings
from tests.deploy.conftest import Stack
from tests.deploy.policyscan import allowed, resource_allows

PULL = ("ecr:BatchGetImage", "ecr:GetDownloadUrlForLayer", "ecr:BatchCheckLayerAvailability")
OTHER = "123456789012.dkr.ecr.us-east-1.amazonaws.com/team/other-image:7"
PUBLIC = "public.ecr.aws/acme/rendezvous:1"


def attached(stack: Stack) -> dict[str, Any]:
    iam = boto3.client("iam", endpoint_url=stack.endpoint, region_name="us-east-1")
    name = "rendezvous-task-execution"
    return dict(iam.get_role_policy(RoleName=name, PolicyName=name)["PolicyDocument"])


def test_execution_role_pulls_from_the_given_images_repository(stack: Stack, quiet: Any) -> None:
    with stack.fargate(), stack.propagation():
        commands.up(stack.aws(), stack.settings(image_uri=OTHER), quiet)
        document = attached(stack)
        for action in PULL:
            assert resource_allows(
                document, action, "arn:aws:ecr:us-east-1:123456789012:repository/team/other-image"
            ), action
            assert not resource_allows(
                document, action, "arn:aws:ecr:us-east-1:123456789012:repository/rendezvous"
            ), action

        commands.up(stack.aws(), stack.settings(image_uri=PUBLIC), quiet)
        document = attached(stack)
    assert not {a for a in allowed(document) if a.startswith("ecr:")}
    assert {"logs:CreateLogStream", "logs:PutLogEvents"} <= allowed(document)


def test_execution_policy_follows_the_images_account_and_region() -> None:
    image = "210987654321.dkr.ecr.eu-west-1.amazonaws.com/shared/rdv@sha256:" + "b" * 64
    document = execution_policy(ServerSettings(), image, "us-east-1", "123456789012")
    arn = "arn:aws:ecr:eu-west-1:210987654321:repository/shared/rdv"
    assert all(resource_allows(document, action, arn) for action in PULL)
    assert resource_allows(document, "ecr:GetAuthorizationToken", "*")
    assert resource_allows(
        document,
        "logs:PutLogEvents",
        "arn:aws:logs:us-east-1:123456789012:log-group:/ecs/rendezvous:log-stream:x",
    )
