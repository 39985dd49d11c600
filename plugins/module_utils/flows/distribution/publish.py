# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Key distribution through OpenBao: the province and city sides (docs/distribution.md).

粤交〔2019〕11号 第九条: the province issues the recharge keys and hands out the consumption keys to the cities;
第五条/第七条: each city applies for and keeps its own keys; 第十五条: cities report on the keys they hold;
第十七条: keys can be taken back (issue 6 relies on the layout below).

OpenBao layout (KV v2 mount ``tunion-kb``, every version kept):

* ``cities/<city>/enrolment``     city writes: its RSA public key (PKCS#1 DER, base64) and fingerprint
* ``cities/<city>/kek``           province writes: the city KEK wrapped under that public key (RSA-OAEP)
* ``cities/<city>/blocks/<type>.v<VV>``  province writes: one key block (plugins/module_utils/keyblock.py)
* ``cities/<city>/status``        city writes: the KCVs it installed, per key type and version
* ``province/...``                province only

Each city has a policy ``city-<city>`` and an AppRole ``city-<city>`` (single-use, short-lived secret_ids,
delivered response-wrapped). Revoking a city (issue 6) is: delete the role and its secret_ids, revoke its
tokens by accessor, delete the policy, destroy ``cities/<city>/`` metadata; nothing else is shared.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils import keyblock
from ansible_collections.tunion.keymgmt.plugins.module_utils.hsm import (
    HsmError,
    HsmToken,
    KeyPolicy,
    key_label,
    parse_key_label,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao import OpenBao, OpenBaoError

try:
    from pkcs11 import ObjectClass
except ImportError:  # pragma: no cover - hsm.py reports the missing library
    ObjectClass = None  # type: ignore[assignment,misc]

MOUNT = "tunion-kb"
APPROLE_MOUNT = "approle"
KEK_TYPE = "kek"
RSA_TYPE = "transport_rsa"
RSA_BITS = 3072
KCV_METHOD = "ecb"
STATUS_FORMAT = 1


class DistributionError(Exception):
    """A distribution step cannot go on; the message says what to do. Never carries key material."""


# ------------------------------------------------------------------------------------------------------------------
# naming


def role_name(city: str) -> str:
    return f"city-{city}"


def city_path(city: str, leaf: str) -> str:
    return f"cities/{city}/{leaf}"


def block_name(key_type: str, version: int) -> str:
    return f"{key_type}.v{version:02x}"


def holder(city_code: str) -> str:
    return f"city-{city_code}"


def city_policy_hcl(city: str, mount: str = MOUNT) -> str:
    """Least privilege for one city: its own enrolment and status, read-only KEK envelope and blocks."""
    base = f"{mount}/data/cities/{city}"
    return (
        f"# {role_name(city)}: written by tunion.keymgmt.openbao_city_access\n"
        f'path "{base}/enrolment" {{ capabilities = ["create", "update", "read"] }}\n'
        f'path "{base}/status" {{ capabilities = ["create", "update", "read"] }}\n'
        f'path "{base}/kek" {{ capabilities = ["read"] }}\n'
        f'path "{base}/blocks/*" {{ capabilities = ["read"] }}\n'
        f'path "{mount}/metadata/cities/{city}/blocks" {{ capabilities = ["list"] }}\n'
        f'path "{mount}/metadata/cities/{city}/blocks/" {{ capabilities = ["list"] }}\n'
        "# no default policy: only what a task needs to check and drop its own token\n"
        'path "auth/token/lookup-self" { capabilities = ["read"] }\n'
        'path "auth/token/revoke-self" { capabilities = ["update"] }\n'
    )


def fingerprint(public_der: bytes) -> str:
    """KCV-like fingerprint of a public key: the first 8 bytes of SHA-256 over its PKCS#1 DER, in hex."""
    return hashlib.sha256(public_der).hexdigest()[:16].upper()


# ------------------------------------------------------------------------------------------------------------------
# OpenBao setup (province)


@dataclass(frozen=True)
class AccessSettings:
    mount: str = MOUNT
    approle_mount: str = APPROLE_MOUNT
    secret_id_ttl: str = "10m"  # noqa: S105 - a duration
    token_ttl: str = "10m"  # noqa: S105 - a duration
    token_max_ttl: str = "15m"  # noqa: S105 - a duration
    max_versions: int = 0  # 0: keep every version (OpenBao's default cap is 10)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> AccessSettings:
        """The settings a module was given; a module without one of the options keeps its default."""
        given = {f.name: params[f.name] for f in fields(cls) if params.get(f.name) is not None}
        return cls(**given)


def _ttl_seconds(text: str | int) -> int:
    if isinstance(text, int) or str(text).isdigit():
        return int(text)
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    value, unit = str(text)[:-1], str(text)[-1]
    if unit not in units or not value.isdigit():
        raise DistributionError(f"duration {text!r}: use a number of seconds or <n>s/m/h/d")
    return int(value) * units[unit]


def ensure_engines(bao: OpenBao, settings: AccessSettings, check_mode: bool) -> list[str]:
    """KV v2 mount keeping versions, and the AppRole auth method. Returns what changed."""
    changes = []
    mounts = bao.call("listing secrets engines", bao.client.sys.list_mounted_secrets_engines)
    mounts = mounts.get("data", mounts)
    current = mounts.get(f"{settings.mount}/")
    if current is None:
        changes.append(f"enable KV v2 at {settings.mount}/")
        if not check_mode:
            bao.call(
                f"enabling KV v2 at {settings.mount}",
                bao.client.sys.enable_secrets_engine,
                backend_type="kv",
                path=settings.mount,
                options={"version": "2"},
                description="tunion-keyops key blocks, KEK envelopes and city status (versions kept)",
            )
    elif current.get("type") != "kv" or (current.get("options") or {}).get("version") != "2":
        raise DistributionError(f"{settings.mount}/ is mounted but is not KV version 2; move it away first")
    if current is None and not check_mode:
        _wait_for_kv(bao, settings.mount)
    if current is None or not check_mode:
        config = {}
        if current is not None:
            config = bao.call(
                "reading the KV configuration", bao.client.secrets.kv.v2.read_configuration, mount_point=settings.mount
            )["data"]
        if current is None or int(config.get("max_versions", -1)) != settings.max_versions:
            if current is not None:
                changes.append(f"set max_versions={settings.max_versions} on {settings.mount}/")
            if not check_mode:
                bao.call(
                    "configuring the KV mount",
                    bao.client.secrets.kv.v2.configure,
                    max_versions=settings.max_versions,
                    mount_point=settings.mount,
                )
    auths = bao.call("listing auth methods", bao.client.sys.list_auth_methods)
    auths = auths.get("data", auths)
    if f"{settings.approle_mount}/" not in auths:
        changes.append(f"enable AppRole at auth/{settings.approle_mount}/")
        if not check_mode:
            bao.call(
                "enabling AppRole",
                bao.client.sys.enable_auth_method,
                method_type="approle",
                path=settings.approle_mount,
            )
    return changes


def _wait_for_kv(bao: OpenBao, mount: str, timeout: float = 15.0) -> None:
    """A new KV v2 mount answers 'upgrading' for a moment; wait until it serves requests."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            bao.client.secrets.kv.v2.read_configuration(mount_point=mount)
            return
        except Exception as exc:
            if time.monotonic() > deadline:
                with _as_openbao_error(bao, f"waiting for {mount}/ to finish its KV v2 upgrade"):
                    raise
            del exc
            time.sleep(0.2)


def _role_wanted(city: str, settings: AccessSettings) -> dict[str, Any]:
    return {
        "bind_secret_id": True,
        "secret_id_num_uses": 1,
        "secret_id_ttl": _ttl_seconds(settings.secret_id_ttl),
        "token_ttl": _ttl_seconds(settings.token_ttl),
        "token_max_ttl": _ttl_seconds(settings.token_max_ttl),
        "token_policies": [role_name(city)],
        "token_no_default_policy": True,
        "token_type": "service",
    }


def ensure_city_access(bao: OpenBao, city: str, settings: AccessSettings, check_mode: bool) -> list[str]:
    """Policy and AppRole of one city. Returns what changed."""
    changes: list[str] = []
    name = role_name(city)
    wanted_policy = city_policy_hcl(city, settings.mount)
    try:
        current_policy = bao.client.sys.read_acl_policy(name)["data"]["policy"]
    except Exception as exc:
        if "InvalidPath" not in type(exc).__name__:
            with _as_openbao_error(bao, f"reading policy {name}"):
                raise
        current_policy = None
    if current_policy != wanted_policy:
        changes.append(f"policy {name}")
        if not check_mode:
            bao.call(f"writing policy {name}", bao.client.sys.create_or_update_acl_policy, name, wanted_policy)
    wanted_role = _role_wanted(city, settings)
    try:
        current_role = bao.client.auth.approle.read_role(name, mount_point=settings.approle_mount)["data"]
    except Exception as exc:
        if "InvalidPath" not in type(exc).__name__:
            with _as_openbao_error(bao, f"reading AppRole {name}"):
                raise
        current_role = None
    if current_role is None or any(current_role.get(k) != v for k, v in wanted_role.items()):
        changes.append(f"AppRole {name}")
        if not check_mode:
            bao.call(
                f"writing AppRole {name}",
                bao.client.auth.approle.create_or_update_approle,
                name,
                mount_point=settings.approle_mount,
                **{k: v for k, v in wanted_role.items() if k != "token_no_default_policy"},
                token_no_default_policy=True,
            )
    return changes


class _as_openbao_error:
    def __init__(self, bao: OpenBao, action: str) -> None:
        self.bao, self.action = bao, action

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> bool:
        if isinstance(exc, Exception) and not isinstance(exc, OpenBaoError):
            from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao import describe

            raise OpenBaoError(describe(exc, self.action, self.bao.url)) from None
        return False


def issue_wrapped_secret_id(bao: OpenBao, city: str, settings: AccessSettings, wrap_ttl: str) -> dict[str, str]:
    """role_id and a response-wrapped, single-use secret_id for one city (a login credential, not state)."""
    name = role_name(city)
    role_id = bao.call(
        f"reading the role_id of {name}",
        bao.client.auth.approle.read_role_id,
        name,
        mount_point=settings.approle_mount,
    )["data"]["role_id"]
    wrapped = bao.call(
        f"issuing a wrapped secret_id for {name}",
        bao.client.auth.approle.generate_secret_id,
        name,
        mount_point=settings.approle_mount,
        wrap_ttl=wrap_ttl,
        metadata={"issued_by": "province", "city": city},
    )
    return {"role_id": role_id, "wrapped_secret_id": wrapped["wrap_info"]["token"], "role_name": name}


# ------------------------------------------------------------------------------------------------------------------
# HSM adapter for key blocks


class HsmKeyOps:
    """`keyblock.KeyBlockHsm` over an hsm.HsmToken: KWP wrap, KBAK derivation and CMAC, all in the HSM."""

    def __init__(self, hsm: HsmToken) -> None:
        self.hsm = hsm

    def wrap_kwp(self, kek: Any, key: Any) -> bytes:
        return self.hsm.wrap(kek, key, mechanism="aes-key-wrap-pad")

    def _kbak(self, kek: Any, derivation: bytes) -> Any:
        # A transient AES-256 MAC key, ECB(KEK, derivation data) computed by CKM_AES_ECB_ENCRYPT_DATA.
        return self.hsm.derive_ecb(
            kek,
            derivation,
            algorithm="AES-256",
            policy=KeyPolicy(usage="mac", token=False, extractable=False),
            check_validity=False,
        )

    def cmac(self, kek: Any, derivation: bytes, data: bytes) -> bytes:
        kbak = self._kbak(kek, derivation)
        try:
            return self.hsm.cmac(kbak, data)
        finally:
            self.hsm.destroy(kbak)

    def cmac_verify(self, kek: Any, derivation: bytes, data: bytes, mac: bytes) -> bool:
        return hmac.compare_digest(self.cmac(kek, derivation, data), mac)


def kek_policy(*, province: bool, token: bool = True) -> KeyPolicy:
    """Province: a trusted KEK (only trusted KEKs may wrap the project's keys; SoftHSM lets the SO create trusted
    objects only as public ones), wrappable under the city's trusted RSA key. City: private, never extractable."""
    if province:
        return KeyPolicy(usage="kek", private=False, extractable=True, trusted=True, extra={"derive": True})
    return KeyPolicy(usage="kek", token=token, extractable=False, extra={"derive": True})


def installed_policy(key_class: str) -> KeyPolicy:
    """Keys a city receives: sensitive, never extractable (header exportability N), usable for derivation."""
    del key_class
    return KeyPolicy(usage="derive", extractable=False, extra={"encrypt": True})


def kcv_hex(hsm: HsmToken, key: Any) -> str:
    return hsm.kcv(key, KCV_METHOD).hex().upper()


# ------------------------------------------------------------------------------------------------------------------
# city side: enrolment


def ensure_city_rsa(hsm: HsmToken, city_code: str, check_mode: bool) -> tuple[bool, bytes | None]:
    """The city's RSA transport pair (private key not extractable). Returns (created, public DER)."""
    label = key_label("internal", RSA_TYPE, 1, holder(city_code))
    pub = hsm.find_key(label=label, object_class=ObjectClass.PUBLIC_KEY)
    priv = hsm.find_key(label=label, object_class=ObjectClass.PRIVATE_KEY)
    if pub is not None and priv is not None:
        return False, hsm.public_key_der(pub)
    if pub is not None or priv is not None:
        raise DistributionError(
            f"token {hsm.label!r} holds half of the RSA pair {label!r}; remove it (or re-provision) and re-enrol"
        )
    if check_mode:
        return True, None
    pub, _private = hsm.generate_rsa_keypair(RSA_BITS, label)
    return True, hsm.public_key_der(pub)


def publish_enrolment(
    bao: OpenBao, city: str, city_code: str, public_der: bytes | None, check_mode: bool
) -> tuple[bool, str | None]:
    """Publish the city's public key and fingerprint unless OpenBao already has the same. Returns (changed, fp)."""
    if public_der is None:
        return True, None
    fp = fingerprint(public_der)
    current = bao.kv_read(MOUNT, city_path(city, "enrolment"))
    if current and current["data"].get("fingerprint") == fp:
        return False, fp
    if not check_mode:
        bao.kv_write(
            MOUNT,
            city_path(city, "enrolment"),
            {
                "city": city,
                "city_code": city_code,
                "public_key": base64.b64encode(public_der).decode(),
                "public_key_format": "PKCS#1 RSAPublicKey DER",
                "fingerprint": fp,
                "fingerprint_method": "SHA-256(DER)[:8]",
            },
        )
    return True, fp


# ------------------------------------------------------------------------------------------------------------------
# province side: KEK per city, envelopes and blocks


@dataclass(frozen=True)
class Grant:
    key_type: str
    version: int
    not_before: str | None = None
    not_after: str | None = None


def parse_grants(raw: Iterable[Any]) -> list[Grant]:
    grants, seen = [], set()
    for raw_entry in raw or []:
        entry = {"key_type": raw_entry} if isinstance(raw_entry, str) else raw_entry
        if not isinstance(entry, dict) or "key_type" not in entry:
            raise DistributionError(f"grant {entry!r}: give key_type (and version, default 1)")
        grant = Grant(
            str(entry["key_type"]),
            int(entry.get("version", 1)),
            entry.get("not_before"),
            entry.get("not_after"),
        )
        if (grant.key_type, grant.version) in seen:
            raise DistributionError(f"grant {grant.key_type} v{grant.version} is listed twice")
        seen.add((grant.key_type, grant.version))
        grants.append(grant)
    return grants


def use_catalogue(hsm: HsmToken, catalogue: list[dict[str, Any]] | None) -> None:
    """Let the token find validity periods in the catalogue (SoftHSM cannot return a private key's dates)."""
    if catalogue:
        from ansible_collections.tunion.keymgmt.plugins.module_utils.catalogue import load_catalogue

        hsm.validity_lookup = load_catalogue(catalogue).validity_for


def province_key_index(hsm: HsmToken) -> dict[tuple[str, int, str], Any]:
    """(type, version, holder) -> key object for every project-labelled secret key in the province token."""
    index = {}
    for obj in hsm.list_keys(ObjectClass.SECRET_KEY):
        name = parse_key_label(obj.label or "")
        if name is not None:
            index[(name.key_type, name.version, name.holder)] = (obj, name.key_class)
    return index


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)


@dataclass
class CityTarget:
    city: str
    city_code: str
    grants: list[Grant]
    kek_version: int = 1


def read_enrolment(bao: OpenBao, city: str) -> tuple[bytes, str] | None:
    current = bao.kv_read(MOUNT, city_path(city, "enrolment"))
    if not current:
        return None
    data = current["data"]
    try:
        der = base64.b64decode(data["public_key"], validate=True)
    except (KeyError, ValueError):
        raise DistributionError(f"city {city}: the enrolment record in OpenBao is unreadable; re-enrol") from None
    if fingerprint(der) != data.get("fingerprint"):
        raise DistributionError(f"city {city}: enrolment fingerprint does not match its public key; re-enrol")
    return der, data["fingerprint"]


def plan_envelope(bao: OpenBao, target: CityTarget, fp: str) -> dict[str, Any] | None:
    """The current envelope if it is up to date (same KEK version, same city public key), else None."""
    current = bao.kv_read(MOUNT, city_path(target.city, "kek"))
    if not current:
        return None
    data = current["data"]
    if int(data.get("kek_version", -1)) >= target.kek_version and data.get("rsa_fingerprint") == fp:
        return data
    return None


def make_envelope(so_hsm: HsmToken, target: CityTarget, public_der: bytes, fp: str) -> dict[str, Any]:
    """In an SO session: ensure the trusted KEK for the city, wrap it (RSA-OAEP) under the city's public key."""
    kek_label = key_label("internal", KEK_TYPE, target.kek_version, holder(target.city_code))
    kek = so_hsm.find_key(label=kek_label)
    if kek is None:
        kek = so_hsm.generate_secret("AES-256", kek_label, None, kek_policy(province=True))
    rsa_label = key_label("internal", RSA_TYPE, 1, holder(target.city_code))
    old = so_hsm.find_key(label=rsa_label, object_class=ObjectClass.PUBLIC_KEY)
    if old is not None and so_hsm.public_key_der(old) != public_der:
        so_hsm.destroy(old)
        old = None
    pub = old or so_hsm.import_rsa_public_key(public_der, rsa_label, trusted=True)
    wrapped = so_hsm.wrap(pub, kek, mechanism="rsa-oaep")
    return {
        "city": target.city,
        "kek_version": target.kek_version,
        "kek_kcv": kcv_hex(so_hsm, kek),
        "kek_algorithm": "AES-256",
        "rsa_fingerprint": fp,
        "wrapping": "RSA-OAEP (SHA-1, MGF1-SHA-1)",
        "wrapped_kek": base64.b64encode(wrapped).decode(),
    }


def build_city_blocks(
    hsm: HsmToken,
    *,
    ops: HsmKeyOps,
    index: dict[tuple[str, int, str], Any],
    target: CityTarget,
    kek_kcv: str,
    issuer: str,
) -> dict[str, tuple[str, dict[str, Any]]]:
    """name -> (block, header dict) for every grant of one city. Raises DistributionError for a missing key."""
    kek_label = key_label("internal", KEK_TYPE, target.kek_version, holder(target.city_code))
    kek = hsm.find_key(label=kek_label)
    if kek is None:
        raise DistributionError(f"city {target.city}: KEK {kek_label!r} is not in the province token")
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for grant in target.grants:
        found = index.get((grant.key_type, grant.version, holder(target.city_code))) or index.get(
            (grant.key_type, grant.version, "province")
        )
        if found is None:
            raise DistributionError(
                f"city {target.city}: granted key {grant.key_type} v{grant.version} is not in the province token "
                "(issue it first: playbooks/issue_keys.yml)"
            )
        key, key_class = found
        info = hsm.describe(key, kcv_method=KCV_METHOD)
        not_before = grant.not_before or info.get("not_before")
        not_after = grant.not_after or info.get("not_after")
        if not not_before or not not_after:
            raise DistributionError(
                f"city {target.city}: no validity period for {grant.key_type} v{grant.version} "
                "(not in the token, the catalogue or the grant)"
            )
        header = keyblock.KeyBlockHeader(
            key_type=grant.key_type,
            key_class=key_class,
            version=grant.version,
            algorithm=info["algorithm"],
            kcv=info["kcv"],
            city=target.city_code,
            not_before=_iso(not_before) or "",
            not_after=_iso(not_after) or "",
            issuer=issuer,
            kek_version=target.kek_version,
            kek_kcv=kek_kcv,
        )
        try:
            block = keyblock.build(ops, kek, key, header)
        except keyblock.KeyBlockError as exc:
            raise DistributionError(f"city {target.city}: {exc}") from None
        out[block_name(grant.key_type, grant.version)] = (block, header.as_dict())
    return out


def publish_blocks(
    bao: OpenBao, city: str, blocks: dict[str, tuple[str, dict[str, Any]]], check_mode: bool
) -> list[str]:
    """Write the blocks OpenBao does not already hold byte for byte. Returns the names written."""
    written = []
    for name, (block, header) in sorted(blocks.items()):
        path = city_path(city, f"blocks/{name}")
        current = bao.kv_read(MOUNT, path)
        if current and current["data"].get("block") == block:
            continue
        written.append(name)
        if not check_mode:
            bao.kv_write(MOUNT, path, {"block": block, "key_type": header["key_type"], "version": header["version"]})
    return written


def retire_blocks(bao: OpenBao, city: str, keep: Iterable[str], check_mode: bool) -> list[str]:
    """Destroy (every version and the metadata) the city's blocks that are no longer granted: a retired or revoked
    key version, or a grant taken away. Returns the names removed."""
    return remove_blocks(bao, city, set(bao.kv_list(MOUNT, city_path(city, "blocks"))) - set(keep), check_mode)


def remove_blocks(bao: OpenBao, city: str, names: Iterable[str], check_mode: bool) -> list[str]:
    """Destroy these blocks of the city, if present (every version and the metadata). Returns the names removed."""
    present = set(bao.kv_list(MOUNT, city_path(city, "blocks")))
    gone = sorted(set(names) & present)
    for name in gone:
        if not check_mode:
            path = city_path(city, f"blocks/{name}")
            bao.call(
                f"destroying {MOUNT}/{path}",
                bao.client.secrets.kv.v2.delete_metadata_and_all_versions,
                path,
                mount_point=MOUNT,
            )
    return gone


def parse_targets(raw: Iterable[dict[str, Any]]) -> list[CityTarget]:
    targets = []
    for entry in raw:
        try:
            targets.append(
                CityTarget(
                    city=str(entry["city"]),
                    city_code=str(entry["city_code"]),
                    grants=parse_grants(entry.get("grants") or []),
                    kek_version=int(entry.get("kek_version", 1)),
                )
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise DistributionError(f"target {entry!r}: needs city, city_code, grants, kek_version ({exc})") from None
    return targets


def expected_kcvs(hsm: HsmToken, targets: list[CityTarget]) -> dict[str, dict[str, dict[str, Any]]]:
    """city -> block name -> {kcv, key_type, version} from the province's own token."""
    index = province_key_index(hsm)
    expected: dict[str, dict[str, dict[str, Any]]] = {}
    for target in targets:
        expected[target.city] = {}
        for grant in target.grants:
            found = index.get((grant.key_type, grant.version, holder(target.city_code))) or index.get(
                (grant.key_type, grant.version, "province")
            )
            kcv = kcv_hex(hsm, found[0]) if found else "(not in the province token)"
            expected[target.city][block_name(grant.key_type, grant.version)] = {
                "kcv": kcv,
                "key_type": grant.key_type,
                "version": grant.version,
            }
    return expected


def city_in_step(
    bao: OpenBao, city: str, envelope: dict[str, Any], blocks: dict[str, tuple[str, dict[str, Any]]]
) -> bool:
    """True when the city's last report shows the current KEK and exactly the KCVs of the blocks it is granted."""
    record = bao.kv_read(MOUNT, city_path(city, "status"))
    if not record:
        return False
    status = record["data"]
    kek = status.get("kek") or {}
    if int(kek.get("version", -1)) != int(envelope["kek_version"]) or kek.get("kcv") != envelope["kek_kcv"]:
        return False
    reported = {name: str(item.get("kcv")) for name, item in (status.get("keys") or {}).items()}
    return reported == {name: header["kcv"] for name, (_block, header) in blocks.items()}


def publish_for_cities(
    bao: OpenBao,
    targets: list[CityTarget],
    *,
    so_session: Callable[[], Any],
    user_session: Callable[[], Any],
    issuer: str,
    catalogue: list[dict[str, Any]] | None,
    check_mode: bool,
) -> dict[str, Any]:
    """The province's whole publishing pass: envelopes (SO session, only when one is missing or stale), then blocks."""
    report: dict[str, dict[str, Any]] = {}
    awaiting: list[str] = []
    in_step: list[str] = []
    envelopes: dict[str, dict[str, Any]] = {}
    to_wrap: list[tuple[CityTarget, tuple[bytes, str]]] = []
    for target in targets:
        enrolment = read_enrolment(bao, target.city)
        if enrolment is None:
            awaiting.append(target.city)
            continue
        current = plan_envelope(bao, target, enrolment[1])
        report[target.city] = {"kek_version": target.kek_version, "envelope": "unchanged", "blocks_written": []}
        if current is None:
            to_wrap.append((target, enrolment))
            report[target.city]["envelope"] = "published"
        else:
            envelopes[target.city] = current
    if to_wrap and not check_mode:
        with so_session() as so_hsm:
            for target, (der, fp) in to_wrap:
                envelope = make_envelope(so_hsm, target, der, fp)
                bao.kv_write(MOUNT, city_path(target.city, "kek"), envelope)
                envelopes[target.city] = envelope
    ready = [t for t in targets if t.city in envelopes]
    if ready:
        with user_session() as hsm:
            use_catalogue(hsm, catalogue)
            ops = HsmKeyOps(hsm)
            index = province_key_index(hsm)
            for target in ready:
                envelope = envelopes[target.city]
                blocks = build_city_blocks(
                    hsm, ops=ops, index=index, target=target, kek_kcv=envelope["kek_kcv"], issuer=issuer
                )
                written = publish_blocks(bao, target.city, blocks, check_mode)
                retired = retire_blocks(bao, target.city, blocks, check_mode)
                report[target.city]["blocks_written"] = written
                report[target.city]["blocks_retired"] = retired
                fresh = not written and not retired and report[target.city]["envelope"] == "unchanged"
                if fresh and city_in_step(bao, target.city, envelope, blocks):
                    in_step.append(target.city)
    for target, _wrapped in to_wrap:
        if target.city not in envelopes:  # check mode: every block would be made under the new KEK
            report[target.city]["blocks_written"] = [block_name(g.key_type, g.version) for g in target.grants]
    return {
        "changed": any(
            r["envelope"] != "unchanged" or r["blocks_written"] or r.get("blocks_retired") for r in report.values()
        ),
        "cities": report,
        "awaiting_enrolment": awaiting,
        "in_step": in_step,
        "to_install": [t.city for t in targets if t.city not in in_step],
    }


# ------------------------------------------------------------------------------------------------------------------
# city side: KEK and blocks


def install_kek(
    hsm: HsmToken, bao: OpenBao, city: str, city_code: str, check_mode: bool
) -> tuple[bool, dict[str, Any] | None, Any]:
    """Install the KEK from the envelope if the token lacks it. Returns (changed, kek info, kek object)."""
    envelope = bao.kv_read(MOUNT, city_path(city, "kek"))
    if not envelope:
        return False, None, None
    data = envelope["data"]
    version, want_kcv = int(data["kek_version"]), str(data["kek_kcv"]).upper()
    label = key_label("internal", KEK_TYPE, version, holder(city_code))
    kek = hsm.find_key(label=label)
    info = {"version": version, "kcv": want_kcv}
    if kek is not None:
        have = kcv_hex(hsm, kek)
        if have != want_kcv:
            raise DistributionError(
                f"city {city}: the token's KEK v{version} has KCV {have}, the province published {want_kcv}: "
                "the province must rotate the KEK (raise its version)"
            )
        return False, info, kek
    rsa_label = key_label("internal", RSA_TYPE, 1, holder(city_code))
    priv = hsm.find_key(label=rsa_label, object_class=ObjectClass.PRIVATE_KEY)
    pub = hsm.find_key(label=rsa_label, object_class=ObjectClass.PUBLIC_KEY)
    if priv is None or pub is None:
        raise DistributionError(f"city {city}: the RSA transport pair {rsa_label!r} is missing; re-enrol the city")
    if fingerprint(hsm.public_key_der(pub)) != data.get("rsa_fingerprint"):
        raise DistributionError(
            f"city {city}: the KEK envelope was made for another public key; wait for the province to re-wrap it"
        )
    blob = base64.b64decode(data["wrapped_kek"])

    def unwrap_kek(label: str | None, token: bool) -> Any:
        return hsm.unwrap(
            priv,
            blob,
            "AES-256",
            label=label,
            id=None,
            policy=kek_policy(province=False, token=token),
            mechanism="rsa-oaep",
        )

    # a session copy first: its KCV is checked before anything is stored; in check mode it stands in for the KEK
    probe = unwrap_kek(None, False)
    have = kcv_hex(hsm, probe)
    if have != want_kcv:
        hsm.destroy(probe)
        raise DistributionError(f"city {city}: unwrapped KEK has KCV {have}, envelope says {want_kcv}; not installed")
    if check_mode:
        return True, info, probe
    hsm.destroy(probe)
    return True, info, unwrap_kek(label, True)


@dataclass
class VerifiedBlock:
    name: str
    parsed: keyblock.ParsedBlock
    label: str
    installed: bool


def fetch_blocks(bao: OpenBao, city: str) -> dict[str, str]:
    blocks = {}
    for name in bao.kv_list(MOUNT, city_path(city, "blocks")):
        record = bao.kv_read(MOUNT, city_path(city, f"blocks/{name}"))
        if record:
            blocks[name] = str(record["data"].get("block", ""))
    return blocks


def verify_blocks(
    hsm: HsmToken, *, kek: Any, kek_info: dict[str, Any], city: str, city_code: str, blocks: dict[str, str]
) -> list[VerifiedBlock]:
    """Every block: MAC (in the HSM), city, validity, KEK; then the KCV on a transient unwrap. All or nothing."""
    ops = HsmKeyOps(hsm)
    verified = []
    for name, text in sorted(blocks.items()):
        try:
            parsed = keyblock.verify(ops, kek, text, city=city_code, kek_version=kek_info["version"])
        except keyblock.KeyBlockError as exc:
            raise DistributionError(f"city {city}, block {name}: {exc}") from None
        header = parsed.header
        if header.kek_kcv != kek_info["kcv"]:
            raise DistributionError(f"city {city}, block {name}: made under another KEK; nothing installed")
        label = key_label(header.key_class, header.key_type, header.version, holder(city_code))
        existing = hsm.find_key(label=label)
        if existing is not None:
            have = kcv_hex(hsm, existing)
            if have != header.kcv:
                raise DistributionError(
                    f"city {city}: token holds {label} with KCV {have} but the province's block says {header.kcv}; "
                    "a key version never changes value: nothing installed, tell the province"
                )
            verified.append(VerifiedBlock(name, parsed, label, True))
            continue
        probe = hsm.unwrap(
            kek,
            parsed.body,
            header.algorithm,
            label=None,
            id=None,
            policy=KeyPolicy(usage="encrypt", token=False, extractable=False),
        )
        try:
            have = kcv_hex(hsm, probe)
        finally:
            hsm.destroy(probe)
        if have != header.kcv:
            raise DistributionError(
                f"city {city}, block {name}: unwrapped key has KCV {have}, the header says {header.kcv}; "
                "nothing installed"
            )
        verified.append(VerifiedBlock(name, parsed, label, False))
    return verified


def install_verified(hsm: HsmToken, kek: Any, verified: list[VerifiedBlock]) -> list[str]:
    done = []
    for item in verified:
        if item.installed:
            continue
        header = item.parsed.header
        hsm.unwrap(
            kek,
            item.parsed.body,
            header.algorithm,
            label=item.label,
            id=None,
            policy=installed_policy(header.key_class),
        )
        done.append(item.label)
    return done


def install_for_city(bao: OpenBao, hsm: HsmToken, city: str, code: str, *, check_mode: bool) -> dict[str, Any]:
    """The city's whole pass: KEK, fetch, verify every block (all or nothing), install, report the KCVs."""
    kek_changed, kek_info, kek = install_kek(hsm, bao, city, code, check_mode)
    if (kek is None or kek_info is None) and check_mode:  # enrolling in this same check run: nothing to verify yet
        return {
            "changed": True,
            "installed": [],
            "keys": {},
            "kek": None,
            "kek_installed": True,
            "status_reported": True,
            "note": "no KEK envelope yet: the city would be enrolled first",
        }
    if kek is None or kek_info is None:
        raise DistributionError(
            f"city {city}: OpenBao holds no KEK envelope for it yet - enrol it (tunion.keymgmt.city_enrol), "
            "then let the province publish (tunion.keymgmt.keyblock_publish)"
        )
    blocks = fetch_blocks(bao, city)
    verified = verify_blocks(hsm, kek=kek, kek_info=kek_info, city=city, city_code=code, blocks=blocks)
    installed = [v.label for v in verified if not v.installed] if check_mode else install_verified(hsm, kek, verified)
    retired = retire_keys(hsm, code, {v.label for v in verified}, check_mode)
    record = status_record(city, code, kek_info, verified)
    reported = report_status(bao, city, record, check_mode)
    return {
        "changed": kek_changed or bool(installed) or bool(retired) or reported,
        "installed": installed,
        "retired": retired,
        "keys": record["keys"],
        "kek": kek_info,
        "kek_installed": kek_changed,
        "status_reported": reported,
    }


def retire_keys(hsm: HsmToken, city_code: str, keep: set[str], check_mode: bool) -> list[dict[str, str]]:
    """Destroy the city's granted keys that no block carries any more (a retired, revoked or withdrawn version):
    every object labelled for this city except its KEKs, its RSA transport pair and the keys of ``keep``. Returns
    label, object class and KCV of each (never a value)."""
    from ansible_collections.tunion.keymgmt.plugins.module_utils.revocation import destroy_holder_objects

    return destroy_holder_objects(
        hsm,
        holder(city_code),
        select=lambda name: name.key_type not in (KEK_TYPE, RSA_TYPE) and name.label not in keep,
        check_mode=check_mode,
    )


def status_record(city: str, city_code: str, kek_info: dict[str, Any] | None, verified: list[VerifiedBlock]) -> dict:
    return {
        "format": STATUS_FORMAT,
        "city": city,
        "city_code": city_code,
        "kek": kek_info,
        "keys": {
            v.name: {
                "key_type": v.parsed.header.key_type,
                "version": v.parsed.header.version,
                "kcv": v.parsed.header.kcv,
                "label": v.label,
            }
            for v in verified
        },
    }


def report_status(bao: OpenBao, city: str, record: dict[str, Any], check_mode: bool) -> bool:
    current = bao.kv_read(MOUNT, city_path(city, "status"))
    if current:
        previous = {k: v for k, v in current["data"].items() if k != "reported_at"}
        if previous == record:
            return False
    if not check_mode:
        stamped = dict(record, reported_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"))
        bao.kv_write(MOUNT, city_path(city, "status"), stamped)
    return True


# ------------------------------------------------------------------------------------------------------------------
# province side: comparison


def compare_status(
    expected: dict[str, dict[str, dict[str, Any]]], reported: dict[str, dict[str, Any] | None]
) -> list[dict[str, Any]]:
    """expected: city -> name -> {kcv, ...}; reported: city -> status record (or None). Lists every difference."""
    diffs = []
    for city in sorted(expected):
        status = reported.get(city)
        keys = (status or {}).get("keys") or {}
        for name, want in sorted(expected[city].items()):
            got = keys.get(name)
            if got is None:
                diffs.append(
                    {
                        "city": city,
                        "key": name,
                        "province_kcv": want["kcv"],
                        "city_kcv": None,
                        "problem": "not reported installed" if status else "city never reported",
                    }
                )
            elif str(got.get("kcv")).upper() != want["kcv"]:
                diffs.append(
                    {
                        "city": city,
                        "key": name,
                        "province_kcv": want["kcv"],
                        "city_kcv": got.get("kcv"),
                        "problem": "KCV differs",
                    }
                )
        for name in sorted(set(keys) - set(expected[city])):
            diffs.append(
                {
                    "city": city,
                    "key": name,
                    "province_kcv": None,
                    "city_kcv": keys[name].get("kcv"),
                    "problem": "installed but not granted",
                }
            )
    return diffs


__all__ = ["DistributionError", "HsmError", "OpenBaoError"]
