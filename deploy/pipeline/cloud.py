"""``pipeline up``: the pipeline on AWS, reconciled from one ``--name``.

Nothing here keeps local state: every resource has a name derived from ``--name``
(:mod:`.names`), so ``run`` and ``report`` (:mod:`.executions`) find what ``up`` made,
from any machine. Each step is idempotent (create when missing, update when different);
the pieces live beside this module: what is shipped (:mod:`.bundles`), the roles
(:mod:`.access`), the functions and layer (:mod:`.functions`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from rendezvous_deploy import roles
from rendezvous_deploy.aws import Aws, DeployError, error_code
from rendezvous_deploy.pipeline.access import (
    LAMBDA_TRUST,
    STATES_TRUST,
    ensure_role,
    lambda_policy,
    s3_access,
    states_policy,
)
from rendezvous_deploy.pipeline.bundles import (
    RUNTIME,
    build_and_push_worker,
    definition,
    handler_zip,
    layer_zip,
)
from rendezvous_deploy.pipeline.executions import find_state_machine
from rendezvous_deploy.pipeline.functions import ensure_function, ensure_layer
from rendezvous_deploy.pipeline.names import UpSettings
from rendezvous_deploy.roles import policy
from rendezvous_pipeline.runauth import SECRET_ARN_ENV

Step = Callable[[str, bool], None]  # (what happened, whether anything changed)


@dataclass
class Deployment:
    initialize_arn: str
    worker_arn: str
    summarize_arn: str
    state_machine_arn: str
    layer_arn: str
    image_uri: str


def up(
    aws: Aws,
    settings: UpSettings,
    step: Step,
    on_progress: Callable[[str], None],
    on_change: roles.Change | None = None,
) -> Deployment:
    """Roles, layer, three functions and the state machine, each created or updated."""
    names = settings.names
    # Before anything is created: a missing Docker engine must cost nothing.
    docker = None
    if not settings.image_uri:
        from rendezvous_deploy.server.image import connect_docker

        docker = connect_docker()
    account = aws.client("sts").get_caller_identity()["Account"]
    region = aws.region_name
    boundary = roles.check_boundary(aws, account, roles.PIPELINE_BOUNDARY)
    secret_arn = find_auth_secret(aws, settings)
    if secret_arn:
        secret_name = secret_arn.rsplit(":", 1)[-1]  # (rich would show ":secret:" as an emoji)
        step(f"Initialize mints each run's credential from the server's {secret_name}", False)
    elif settings.auth is False:
        step("--no-auth: runs get no credential (only a server without auth admits them)", False)
    else:
        step(
            f"no auth secret for server {settings.server_name!r}: runs get no credential, "
            "so only a server without auth admits them (--auth makes this an error)",
            False,
        )

    s3 = s3_access(
        settings.read_locations, settings.write_locations, any_bucket=settings.any_bucket
    )
    lambda_role, changed = ensure_role(
        aws,
        names.lambda_role,
        policy(LAMBDA_TRUST),
        lambda_policy(region, account, names, s3),
        boundary,
        on_change,
    )
    step(f"Lambda role {names.lambda_role}", changed)
    initialize_role, changed = ensure_role(
        aws,
        names.initialize_role,
        policy(LAMBDA_TRUST),
        lambda_policy(region, account, names, s3, secret_arn),
        boundary,
        on_change,
    )
    step(f"Initialize role {names.initialize_role}", changed)
    states_role, changed = ensure_role(
        aws,
        names.states_role,
        policy(STATES_TRUST, Account=account),
        states_policy(region, account, names, s3),
        boundary,
        on_change,
    )
    step(f"Step Functions role {names.states_role}", changed)

    layer_arn, changed = ensure_layer(aws, names.layer, layer_zip())
    step(f"fmi_client layer {layer_arn}", changed)

    code = handler_zip()
    arns: dict[str, str] = {}
    minting = {SECRET_ARN_ENV: secret_arn} if secret_arn else {}
    for name, handler, role, variables in (
        (names.initialize, "rendezvous_pipeline.initialize.handler", initialize_role, minting),
        (names.summarize, "rendezvous_pipeline.summarize.handler", lambda_role, {}),
    ):
        arns[name], changed = ensure_function(
            aws,
            name,
            {
                "Runtime": RUNTIME,
                "Role": role,
                "Environment": {"Variables": variables},
                "Handler": handler,
                "Code": {"ZipFile": code},
                "Timeout": settings.small_timeout_s,
                "MemorySize": settings.small_memory_mb,
                "Layers": [layer_arn],
                "Description": "rendezvous inference pipeline",
            },
            on_change,
        )
        step(f"zip function {name}", changed)

    image_uri = settings.image_uri or build_and_push_worker(aws, names, on_progress, docker)
    arns[names.worker], changed = ensure_function(
        aws,
        names.worker,
        {
            "PackageType": "Image",
            "Role": lambda_role,
            "Code": {"ImageUri": image_uri},
            "Timeout": settings.worker_timeout_s,
            "MemorySize": settings.worker_memory_mb,
            "Description": "rendezvous inference pipeline worker (one rank)",
        },
        on_change,
    )
    step(f"container function {names.worker} ({image_uri})", changed)

    document = json.dumps(
        definition(arns[names.initialize], arns[names.worker], arns[names.summarize]), indent=2
    )
    machine_arn, changed = ensure_state_machine(aws, names.state_machine, document, states_role)
    step(f"state machine {names.state_machine}", changed)
    return Deployment(
        arns[names.initialize],
        arns[names.worker],
        arns[names.summarize],
        machine_arn,
        layer_arn,
        image_uri,
    )


def find_auth_secret(aws: Aws, settings: UpSettings) -> str | None:
    """The ARN of the server's auth secret (``server up --name``), None with auth off or
    (auth not asked for) no secret; a DeployError when auth is asked for and none exists."""
    from rendezvous_deploy.server import authsecret

    if settings.auth is False:
        return None
    name = authsecret.secret_name(settings.server_name)
    try:  # metadata only: the deployer never reads the value
        found = aws.client("secretsmanager").describe_secret(SecretId=name)
    except Exception as err:
        if error_code(err) != "ResourceNotFoundException":
            raise
        found = None
    arn = str(found["ARN"]) if found and not found.get("DeletedDate") else None
    if arn is None and settings.auth:
        raise DeployError(
            f"no auth secret {name}: deploy the server first (`rendezvous-deploy server up "
            f"--name {settings.server_name}`), name it with --server-name, or pass --no-auth "
            "if the server runs without auth"
        )
    return arn


def ensure_state_machine(aws: Aws, name: str, document: str, role: str) -> tuple[str, bool]:
    sfn = aws.client("stepfunctions")
    arn = find_state_machine(aws, name)
    if arn is None:
        created = sfn.create_state_machine(
            name=name, definition=document, roleArn=role, type="STANDARD"
        )
        return str(created["stateMachineArn"]), True
    current = sfn.describe_state_machine(stateMachineArn=arn)
    if json.loads(current["definition"]) == json.loads(document) and current["roleArn"] == role:
        return arn, False
    sfn.update_state_machine(stateMachineArn=arn, definition=document, roleArn=role)
    return arn, True
