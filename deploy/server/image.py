"""The server image: take a given URI, or push the local ``rendezvous:latest`` to ECR.

The push uses the docker SDK (``DOCKER_HOST`` may point at podman's Docker API). The tag
is the local image id, so the task definition changes exactly when the image does.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable
from typing import Any

from rendezvous_deploy.aws import Aws, DeployError
from rendezvous_deploy.server.settings import ServerSettings


def connect_docker() -> Any:
    """A docker SDK client for DOCKER_HOST (or the default socket), checked to be reachable.

    Called before any AWS resource is made, so a missing engine costs nothing.
    """
    try:
        import docker
    except ImportError as err:  # pragma: no cover - docker is in the test extra
        raise DeployError(
            "pushing needs the docker SDK (pip install docker), or pass --image-uri"
        ) from err
    host = os.environ.get("DOCKER_HOST") or "unset"
    client = None
    try:
        client = docker.from_env()
        client.ping()
    except Exception as err:
        if client is not None:
            client.close()
        raise DeployError(
            f"no Docker or podman engine reachable (DOCKER_HOST={host}): start one, or pass "
            f"--image-uri with an image already in ECR"
        ) from err
    return client


def ensure_repository(aws: Aws, name: str) -> tuple[str, bool]:
    """The ECR repository URI, creating the repository when missing."""
    ecr = aws.client("ecr")
    try:
        repo = ecr.describe_repositories(repositoryNames=[name])["repositories"][0]
        return str(repo["repositoryUri"]), False
    except Exception as err:
        if "RepositoryNotFound" not in str(err):
            raise
    repo = ecr.create_repository(
        repositoryName=name, imageScanningConfiguration={"scanOnPush": True}
    )["repository"]
    return str(repo["repositoryUri"]), True


def push_local_image(
    aws: Aws,
    settings: ServerSettings,
    on_progress: Callable[[str], None] = lambda _text: None,
    docker_client: Any = None,
) -> str:
    """Push ``settings.local_image`` to the repository; returns the pushed image URI."""
    import docker.errors

    client = docker_client or connect_docker()
    repository_uri, _ = ensure_repository(aws, settings.repository)
    try:
        image = client.images.get(settings.local_image)
    except docker.errors.ImageNotFound as err:
        raise DeployError(
            f"local image {settings.local_image} not found: build it with `make image`, "
            f"or pass --image-uri to deploy an image already in a registry"
        ) from err
    tag = image.id.split(":", 1)[-1][:12]
    token = aws.client("ecr").get_authorization_token()["authorizationData"][0]
    user, password = base64.b64decode(token["authorizationToken"]).decode().split(":", 1)
    image.tag(repository_uri, tag=tag)
    for line in client.api.push(
        repository_uri,
        tag=tag,
        stream=True,
        decode=True,
        auth_config={"username": user, "password": password},
    ):
        if "error" in line:
            raise DeployError(f"pushing {repository_uri}:{tag} failed: {line['error']}")
        if line.get("status"):
            on_progress(f"{line.get('status')} {line.get('progress', '')}".strip())
    return f"{repository_uri}:{tag}"
