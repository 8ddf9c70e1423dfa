"""IAM roles and the policy files in deploy/iam/, shared by ``server`` and ``pipeline``.

One way to fill a policy file and one ``ensure_role``, so the two commands cannot drift
apart again. ``ensure_role`` brings a role in line with the files: it creates what is
missing, replaces a trust policy or inline policy only when it differs, and reports
honestly whether it changed anything (a second ``up`` calls no Create/Put/Update).
"""

from __future__ import annotations

import json
import re
import string
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from rendezvous_deploy.aws import Aws, DeployError, error_code

POLICY_DIR = Path(__file__).resolve().parent / "iam"
DESCRIPTION = "made by rendezvous-deploy"
_WHOLE_PLACEHOLDER = re.compile(r"\$\{(\w+)\}")

def _fill(node: Any, values: dict[str, str | list[str]]) -> Any:
    if isinstance(node, dict):
        return {key: _fill(value, values) for key, value in node.items()}
    if isinstance(node, list):
        out: list[Any] = []
        for element in node:
            whole = _WHOLE_PLACEHOLDER.fullmatch(element) if isinstance(element, str) else None
            if whole and isinstance(values.get(whole.group(1)), list):
                out.extend(values[whole.group(1)])
            else:
                out.append(_fill(element, values))
        return out
    if isinstance(node, str):
        scalars = {k: v for k, v in values.items() if isinstance(v, str)}
        return string.Template(node).substitute(scalars)
    return node


def policy(name: str, **values: str | list[str]) -> dict[str, Any]:
    """deploy/iam/<name>.json with its ``${Key}`` placeholders filled.

    A string value replaces the placeholder inside any string; a list value replaces a list
    element that is exactly ``"${Key}"`` by its elements (resources that depend on flags).
    A placeholder without a value is a DeployError naming it.
    """
    document = json.loads((POLICY_DIR / f"{name}.json").read_text())
    try:
        return dict(_fill(document, values))
    except KeyError as err:
        raise DeployError(f"{name}.json needs a value for ${{{err.args[0]}}}") from err


def decode_document(document: str | dict[str, Any] | None) -> dict[str, Any] | None:
    """A policy document as IAM hands it back: boto3 decodes it to a dict, the raw API
    returns URL-encoded JSON. Either way, the parsed JSON (None when absent)."""
    if document is None or isinstance(document, dict):
        return document
    return dict(json.loads(unquote(document)))


def no_such_entity(err: Exception) -> bool:
    """Whether ``err`` is IAM's NoSuchEntity (the role or policy is not there)."""
    return error_code(err) == "NoSuchEntity"


def _get_role(iam: Any, name: str) -> dict[str, Any] | None:
    try:
        return dict(iam.get_role(RoleName=name)["Role"])
    except Exception as err:
        if not no_such_entity(err):
            raise
        return None


def _inline_policy(iam: Any, role: str, name: str) -> dict[str, Any] | None:
    try:
        found = iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"]
    except Exception as err:
        if not no_such_entity(err):
            raise
        return None
    return decode_document(found)


SERVER_BOUNDARY = "rendezvous-server-boundary"
PIPELINE_BOUNDARY = "rendezvous-pipeline-boundary"
# policy name -> its file in deploy/iam/
BOUNDARY_FILES = {SERVER_BOUNDARY: "server-boundary", PIPELINE_BOUNDARY: "pipeline-boundary"}
Change = Callable[[str, object, object], None]  # (what, old, new), e.g. Reporter.change


def boundary_arn(account: str, name: str) -> str:
    return f"arn:aws:iam::{account}:policy/{name}"


def check_boundary(aws: Aws, account: str, name: str) -> str:
    """The ARN of permissions boundary ``name``; a DeployError saying how an administrator
    creates it when it is missing. Checked before anything is created."""
    arn = boundary_arn(account, name)
    try:
        aws.client("iam").get_policy(PolicyArn=arn)
    except Exception as err:
        if not no_such_entity(err):
            raise
        raise DeployError(
            f"the permissions boundary {arn} does not exist. Every role rendezvous-deploy "
            f"makes carries it, and the deployer may only make roles that do, so an "
            f"administrator creates it once: python -m rendezvous_deploy.roles "
            f"{BOUNDARY_FILES[name]} "
            f"Account={account} > {name}.json && "
            f"aws iam create-policy --policy-name {name} --policy-document file://{name}.json"
        ) from err
    return arn


def _statements(document: dict[str, Any] | None) -> dict[str, str]:
    """Sid -> 'actions on resources' of each statement, to show what a change changes."""
    shown: dict[str, str] = {}
    for index, statement in enumerate((document or {}).get("Statement", [])):
        actions = statement.get("Action", [])
        resources = statement.get("Resource", [])
        listed = [actions] if isinstance(actions, str) else actions
        where = [resources] if isinstance(resources, str) else resources
        effect = "" if statement.get("Effect") == "Allow" else "Deny "
        text = f"{effect}{','.join(listed)} on {','.join(where)}"
        if statement.get("Condition"):
            text += f" if {json.dumps(statement['Condition'], sort_keys=True)}"
        shown[str(statement.get("Sid") or f"#{index}")] = text
    return shown


def report_policy_change(
    on_change: Change, what: str, old: dict[str, Any] | None, new: dict[str, Any] | None
) -> None:
    """One old -> new line per statement that was added, removed or changed."""
    before, after = _statements(old), _statements(new)
    for sid in sorted({*before, *after}):
        if before.get(sid) != after.get(sid):
            on_change(f"{what} {sid}", before.get(sid, ""), after.get(sid, ""))


def _reconcile_extras(iam: Any, name: str, on_change: Change) -> bool:
    """Remove inline policies other than ``name`` and every attached managed policy: the
    role holds exactly what the files say, not what was once added by hand."""
    changed = False
    for policy_name in iam.list_role_policies(RoleName=name).get("PolicyNames", []):
        if policy_name != name:
            old = decode_document(
                iam.get_role_policy(RoleName=name, PolicyName=policy_name)["PolicyDocument"]
            )
            iam.delete_role_policy(RoleName=name, PolicyName=policy_name)
            report_policy_change(on_change, f"role {name} policy {policy_name}", old, None)
            changed = True
    attached = iam.list_attached_role_policies(RoleName=name).get("AttachedPolicies", [])
    for managed in attached:
        iam.detach_role_policy(RoleName=name, PolicyArn=managed["PolicyArn"])
        on_change(f"role {name} attached policy", managed["PolicyArn"], "")
        changed = True
    return changed


def ensure_role(
    aws: Aws,
    name: str,
    trust: dict[str, Any],
    inline: dict[str, Any],
    *,
    description: str = DESCRIPTION,
    boundary: str | None = None,
    on_change: Change | None = None,
) -> tuple[str, bool]:
    """Role ``name`` trusting ``trust``, with one inline policy ``inline`` named after it,
    and the permissions boundary ``boundary`` (a policy ARN), and nothing else.

    Returns (role ARN, whether anything was created or replaced). An existing role whose
    trust policy differs gets ``UpdateAssumeRolePolicy``; the inline policy is put only
    when it is missing or differs (compared as parsed JSON); other inline policies and
    attached policies are removed. Each change goes to ``on_change`` as old -> new.
    """
    iam = aws.client("iam")
    report: Change = on_change or (lambda _what, _old, _new: None)
    changed = False
    role = _get_role(iam, name)
    existed = role is not None
    if role is None:
        extra = {"PermissionsBoundary": boundary} if boundary else {}
        role = iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(trust),
            Description=description,
            **extra,
        )["Role"]
        changed = True
        current = None  # a new role has no inline policy yet
    else:
        had = (role.get("PermissionsBoundary") or {}).get("PermissionsBoundaryArn")
        if boundary and had != boundary:
            iam.put_role_permissions_boundary(RoleName=name, PermissionsBoundary=boundary)
            report(f"role {name} permissions boundary", had, boundary)
            changed = True
        old_trust = decode_document(role.get("AssumeRolePolicyDocument"))
        if old_trust != trust:
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
            report_policy_change(report, f"role {name} trust", old_trust, trust)
            changed = True
        current = _inline_policy(iam, name, name)
    if current != inline:
        iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=json.dumps(inline))
        if current is not None:
            report_policy_change(report, f"role {name} policy", current, inline)
        changed = True
    if existed and _reconcile_extras(iam, name, report):
        changed = True
    return str(role["Arn"]), changed


def placeholders(name: str) -> list[str]:
    """The ``${Key}`` names in deploy/iam/<name>.json, in order of first use."""
    text = (POLICY_DIR / f"{name}.json").read_text()
    return list(dict.fromkeys(re.findall(r"\$\{(\w+)\}", text)))


def main(argv: list[str] | None = None) -> int:
    """``python -m rendezvous_deploy.roles deployer Region=eu-west-1 Account=... > policy.json``:
    print a policy file filled in, ready for ``aws iam put-user-policy``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m rendezvous_deploy.roles",
        description="Print deploy/iam/<NAME>.json with its ${Key} placeholders filled.",
    )
    parser.add_argument("name", help="policy file without .json, e.g. deployer")
    parser.add_argument("values", nargs="*", metavar="KEY=VALUE",
                        help="e.g. Region=eu-west-1 Account=123456789012 Prefix=rendezvous")
    args = parser.parse_args(argv)
    if not (POLICY_DIR / f"{args.name}.json").is_file():
        known = ", ".join(sorted(p.stem for p in POLICY_DIR.glob("*.json")))
        parser.error(f"no policy file {args.name}.json in {POLICY_DIR}; pick one of: {known}")
    malformed = [value for value in args.values if "=" not in value]
    if malformed:
        parser.error(f"expected KEY=VALUE, got {', '.join(malformed)}")
    values = dict(value.partition("=")[::2] for value in args.values)
    try:
        document = policy(args.name, **values)
    except DeployError as err:
        needed = " ".join(f"{key}=..." for key in placeholders(args.name))
        sys.stderr.write(f"{err}: pass it as KEY=VALUE (all its placeholders: {needed})\n")
        return 2
    print(json.dumps(document, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
