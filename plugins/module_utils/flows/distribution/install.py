# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""City side: install the KEK and the verified key blocks (all or nothing), retire withdrawn keys, report the KCVs."""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import now
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import DistributionError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import (
    KEK_ALGORITHM,
    KEK_TYPE,
    RSA_TYPE,
    city_holder,
    key_id,
    key_label,
    reserved_key_id,
    version_name,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.blocks import fetch_blocks
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.keys import (
    INSTALLED_POLICY,
    HsmKeyOps,
    fingerprint,
    installed_policy,
    kcv_hex,
    kek_policy,
    policy_drift,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.holder_keys import destroy_holder_objects
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats import keyblock
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import OpenBao
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.policy import KeyPolicy
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import HsmToken

STATUS_FORMAT = 1


def install_kek(
    hsm: HsmToken, bao: OpenBao, city: str, city_code: str, check_mode: bool
) -> tuple[bool, dict[str, Any] | None, Any]:
    """Install the KEK from the envelope if the token lacks it. Returns (changed, kek info, kek object)."""
    envelope = bao.kv_read(bao.layout.mount, bao.layout.city(city, "kek"))
    if not envelope:
        return False, None, None
    data = envelope["data"]
    version, want_kcv = int(data["kek_version"]), str(data["kek_kcv"]).upper()
    label = key_label("internal", KEK_TYPE, version, city_holder(city_code))
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
    rsa_label = key_label("internal", RSA_TYPE, 1, city_holder(city_code))
    priv = hsm.find_key(label=rsa_label, object_class="private_key")
    pub = hsm.find_key(label=rsa_label, object_class="public_key")
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
            KEK_ALGORITHM,
            label=label,
            id=reserved_key_id(KEK_TYPE, version, city_holder(city_code)) if label else None,
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
    #: CKA_ID from the block's type code; None only for a block published before blocks carried it (check mode)
    key_id: bytes | None = None
    #: the object already in the token (installed), whose CKA_ID may need setting
    existing: Any = None
    #: an object of an older install whose attributes differ from installed_policy (e.g. CKA_ENCRYPT, no dates):
    #: destroyed and installed again from this verified block
    replaces: Any = None
    drift: tuple[str, ...] = ()


def verify_blocks(
    hsm: HsmToken,
    *,
    kek: Any,
    kek_info: dict[str, Any],
    city: str,
    city_code: str,
    blocks: dict[str, str],
    check_mode: bool = False,
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
        if version_name(header.key_type, header.version) != name:  # the MAC covers the header, not the OpenBao path
            raise DistributionError(
                f"city {city}: the block at blocks/{name} is {header.key_class}.{header.key_type} v{header.version} "
                f"(city {header.city}) by its MAC-verified header, not the key its path names: moved or swapped in "
                "OpenBao; nothing installed, nothing retired; tell the province"
            )
        if header.kek_kcv != kek_info["kcv"]:
            raise DistributionError(f"city {city}, block {name}: made under another KEK; nothing installed")
        label = key_label(header.key_class, header.key_type, header.version, city_holder(city_code))
        if header.type_code is None and not check_mode:
            raise DistributionError(
                f"city {city}, block {name}: published before key blocks carried the type code (TY), so the key's "
                "CKA_ID cannot be named; the province must re-publish (tunion.keymgmt.keyblock_publish): "
                "nothing installed"
            )
        object_id = None
        if header.type_code is not None:
            object_id = key_id(header.key_class, header.type_code, header.version, city_holder(city_code))
        existing = hsm.find_key(label=label)
        drift = _existing_drift(hsm, city, label, header, existing)
        if existing is not None and not drift:
            verified.append(VerifiedBlock(name, parsed, label, True, object_id, existing))
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
        verified.append(VerifiedBlock(name, parsed, label, False, object_id, replaces=existing, drift=tuple(drift)))
    return verified


def _existing_drift(hsm: HsmToken, city: str, label: str, header: keyblock.KeyBlockHeader, existing: Any) -> list[str]:
    """For a key the token already holds: its KCV must be the block's; returns how it differs from the policy."""
    if existing is None:
        return []
    have = kcv_hex(hsm, existing)
    if have != header.kcv:
        raise DistributionError(
            f"city {city}: token holds {label} with KCV {have} but the province's block says {header.kcv}; "
            "a key version never changes value: nothing installed, tell the province"
        )
    return policy_drift(hsm, existing, installed_policy(header), header)


def install_verified(hsm: HsmToken, kek: Any, verified: list[VerifiedBlock]) -> list[str]:
    done = []
    for item in verified:
        if item.installed:
            continue
        header = item.parsed.header
        if item.replaces is not None:  # verified above; if the unwrap fails, the block stays for the next pass
            hsm.destroy(item.replaces)
        hsm.unwrap(
            kek,
            item.parsed.body,
            header.algorithm,
            label=item.label,
            id=item.key_id,
            policy=installed_policy(header),
        )
        done.append(item.label)
    return done


def assign_ids(
    hsm: HsmToken, city_code: str, kek_info: dict[str, Any], verified: list[VerifiedBlock], check_mode: bool
) -> list[str]:
    """Objects the token held before IDs were set get the CKA_ID of the label scheme in place: the city's KEK, its
    RSA transport pair and its granted keys. Returns their labels (in check mode: those that would change)."""
    holder = city_holder(city_code)
    kek_label = key_label("internal", KEK_TYPE, kek_info["version"], holder)
    rsa_label = key_label("internal", RSA_TYPE, 1, holder)
    wanted = [
        (kek_label, hsm.find_key(label=kek_label), reserved_key_id(KEK_TYPE, kek_info["version"], holder)),
        *(
            (
                f"{rsa_label} ({cls})",
                hsm.find_key(label=rsa_label, object_class=cls),
                reserved_key_id(RSA_TYPE, 1, holder),
            )
            for cls in ("public_key", "private_key")
        ),
    ]
    done = [
        label
        for label, obj, object_id in wanted
        if obj is not None and hsm.ensure_id(obj, object_id, check_mode=check_mode)
    ]
    for item in verified:
        if item.existing is None:
            continue
        if item.key_id is None:  # check mode, an old block: the re-published block will name the ID
            if not hsm.describe(item.existing, with_kcv=False)["id"]:
                done.append(item.label)
        elif hsm.ensure_id(item.existing, item.key_id, check_mode=check_mode):
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
    verified = verify_blocks(
        hsm, kek=kek, kek_info=kek_info, city=city, city_code=code, blocks=blocks, check_mode=check_mode
    )
    installed = [v.label for v in verified if not v.installed] if check_mode else install_verified(hsm, kek, verified)
    replaced = [{"label": v.label, "drift": list(v.drift)} for v in verified if v.replaces is not None]
    ids_set = assign_ids(hsm, code, kek_info, verified, check_mode)
    retired = retire_keys(hsm, code, {v.label for v in verified}, check_mode)
    record = status_record(city, code, kek_info, verified)
    reported = report_status(bao, city, record, check_mode)
    return {
        "changed": kek_changed or bool(installed) or bool(retired) or bool(ids_set) or reported,
        "installed": installed,
        "replaced": replaced,
        "ids_set": ids_set,
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
    return destroy_holder_objects(
        hsm,
        city_holder(city_code),
        select=lambda name: name.key_type not in (KEK_TYPE, RSA_TYPE) and name.label not in keep,
        check_mode=check_mode,
    )


def status_record(city: str, city_code: str, kek_info: dict[str, Any] | None, verified: list[VerifiedBlock]) -> dict:
    return {
        "format": STATUS_FORMAT,
        "installed_policy": INSTALLED_POLICY,
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
    current = bao.kv_read(bao.layout.mount, bao.layout.city(city, "status"))
    if current:
        previous = {k: v for k, v in current["data"].items() if k != "reported_at"}
        if previous == record:
            return False
    if not check_mode:
        stamped = dict(record, reported_at=now())
        bao.kv_write(bao.layout.mount, bao.layout.city(city, "status"), stamped)
    return True
