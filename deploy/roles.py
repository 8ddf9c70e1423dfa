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
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from deploy.aws import Aws, DeployError, error_code

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


def ensure_role(
    aws: Aws,
    name: str,
    trust: dict[str, Any],
    inline: dict[str, Any],
    *,
    description: str = DESCRIPTION,
) -> tuple[str, bool]:
    """Role ``name`` trusting ``trust``, with one inline policy ``inline`` named after it.

    Returns (role ARN, whether anything was created or replaced). An existing role whose
    trust policy differs gets ``UpdateAssumeRolePolicy``; the inline policy is put only
    when it is missing or differs (compared as parsed JSON).
    """
    iam = aws.client("iam")
    changed = False
    role = _get_role(iam, name)
    if role is None:
        role = iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(trust),
            Description=description,
        )["Role"]
        changed = True
        current = None  # a new role has no inline policy yet
    else:
        if decode_document(role.get("AssumeRolePolicyDocument")) != trust:
            iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
            changed = True
        current = _inline_policy(iam, name, name)
    if current != inline:
        iam.put_role_policy(RoleName=name, PolicyName=name, PolicyDocument=json.dumps(inline))
        changed = True
    return str(role["Arn"]), changed


def placeholders(name: str) -> list[str]:
    """The ``${Key}`` names in deploy/iam/<name>.json, in order of first use."""
    text = (POLICY_DIR / f"{name}.json").read_text()
    return list(dict.fromkeys(re.findall(r"\$\{(\w+)\}", text)))


def main(argv: list[str] | None = None) -> int:
    """``python -m deploy.roles deployer Region=eu-west-1 Account=... > policy.json``:
    print a policy file filled in, ready for ``aws iam put-user-policy``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(
        prog="python -m deploy.roles",
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
