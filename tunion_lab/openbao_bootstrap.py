"""Give the province its own OpenBao identity, so no playbook ever needs the root token.

`bootstrap()` runs as root right after `bin/lab up` has unsealed OpenBao. It writes the
`province-admin` policy and keeps one periodic, renewable, orphan token for it in the province
user's home (`.lab/nodes/tunion-province/.openbao/token`, 0600, owned by tunion-province). Provincial
tasks that run over SSH as tunion-province read that file (the `token_path` option of the
tunion.keymgmt OpenBao modules); the root token stays in init.json, readable by root only.

Idempotent: a run rewrites the policy only if its text changed, keeps a token that is still valid and
carries the policy (renewing it), and makes a new one only when the file is missing or the token dead.
The policy is scoped to what the province does (粤交〔2019〕11号 第六条、第九条: the province keeps the keys
and hands them out to the cities): the key-block mount, the city policies and AppRoles, and the
token accessors it needs to revoke a city (issue 6).
"""

from __future__ import annotations

import os
import pwd
from pathlib import Path

import hvac
import hvac.exceptions

from tunion_lab.openbao_access import MOUNT

PROVINCE_POLICY = "province-admin"
PROVINCE_USER = "tunion-province"
PERIOD = "768h"  # periodic: renewed by every bin/lab up

# The mount (KV v2) is the collection's default (plugins/module_utils/openbao/layout.py); the auth path is AppRole's.
PROVINCE_POLICY_HCL = """# province-admin: the province's own OpenBao identity (tunion_lab/openbao_bootstrap.py).
# Key blocks, KEK envelopes, city public keys and city status reports (KV v2, versions kept).
path "sys/mounts" { capabilities = ["read"] }
path "sys/mounts/MOUNT" { capabilities = ["create", "read", "update", "sudo"] }
path "sys/mounts/MOUNT/tune" { capabilities = ["create", "read", "update", "sudo"] }
path "MOUNT/*" { capabilities = ["create", "read", "update", "delete", "list"] }

# One AppRole and one policy per city; the province never edits its own policy.
path "sys/auth" { capabilities = ["read", "sudo"] }
path "sys/auth/approle" { capabilities = ["create", "read", "update", "sudo"] }
path "sys/auth/approle/tune" { capabilities = ["create", "read", "update", "sudo"] }
path "auth/approle/role" { capabilities = ["list"] }
path "auth/approle/role/city-*" { capabilities = ["create", "read", "update", "delete", "list"] }
path "sys/policies/acl" { capabilities = ["list"] }
path "sys/policies/acl/city-*" { capabilities = ["create", "read", "update", "delete"] }

# Revocation (issue 6): find and revoke city tokens by accessor.
path "auth/token/accessors" { capabilities = ["list", "sudo"] }
path "auth/token/lookup-accessor" { capabilities = ["update"] }
path "auth/token/revoke-accessor" { capabilities = ["update"] }

# Response wrapping of the secret_ids it issues; check that the audit device is declared.
path "sys/wrapping/lookup" { capabilities = ["update"] }
path "sys/audit" { capabilities = ["read", "sudo"] }
""".replace("MOUNT", MOUNT)


def _token_file(lab_dir: Path) -> Path:
    return lab_dir / "nodes" / PROVINCE_USER / ".openbao" / "token"


def _still_good(client: hvac.Client, token: str) -> bool:
    """True if `token` is alive and carries province-admin; renews it as a side effect."""
    try:
        info = client.auth.token.lookup(token)["data"]
    except (hvac.exceptions.Forbidden, hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath):
        return False
    if PROVINCE_POLICY not in (info.get("policies") or []):
        return False
    if info.get("renewable"):
        client.auth.token.renew(token)
    return True


def _write_owned(path: Path, content: str, user: str) -> None:
    entry = pwd.getpwnam(user)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chown(path.parent, entry.pw_uid, entry.pw_gid)
    os.chmod(path.parent, 0o700)
    temp = path.with_name(path.name + ".new")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
    os.chown(temp, entry.pw_uid, entry.pw_gid)
    os.replace(temp, path)


def bootstrap(lab_dir: Path, openbao_url: str, ca_file: str, root_token: str) -> str:
    """Ensure the province-admin policy and the province's token file; return a short status line."""
    client = hvac.Client(url=openbao_url, token=root_token, verify=ca_file, timeout=10)
    done: list[str] = []
    current = client.sys.read_acl_policy(PROVINCE_POLICY)["data"]["policy"] if _policy_exists(client) else None
    if current != PROVINCE_POLICY_HCL:
        client.sys.create_or_update_acl_policy(PROVINCE_POLICY, PROVINCE_POLICY_HCL)
        done.append("policy written")
    token_file = _token_file(lab_dir)
    existing = token_file.read_text().strip() if token_file.exists() else ""
    if existing and _still_good(client, existing):
        owner = pwd.getpwnam(PROVINCE_USER)
        stat = token_file.stat()
        if (stat.st_uid, stat.st_mode & 0o777) != (owner.pw_uid, 0o600):
            _write_owned(token_file, existing + "\n", PROVINCE_USER)
            done.append("token file permissions fixed")
        return f"{PROVINCE_POLICY}: {', '.join(done) or 'policy unchanged'}; token kept and renewed"
    created = client.auth.token.create_orphan(
        policies=[PROVINCE_POLICY],
        period=PERIOD,
        renewable=True,
        display_name="province-admin",
        meta={"purpose": "tunion-keyops province tasks"},
    )
    _write_owned(token_file, created["auth"]["client_token"] + "\n", PROVINCE_USER)
    done.append(f"new periodic token ({PERIOD}) in {token_file}")
    return f"{PROVINCE_POLICY}: {', '.join(done)}"


def _policy_exists(client: hvac.Client) -> bool:
    return PROVINCE_POLICY in client.sys.list_acl_policies()["data"]["keys"]
