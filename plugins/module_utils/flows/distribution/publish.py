# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Province side: one KEK per city wrapped under its public key (the envelope), and the key blocks of its grants."""

from __future__ import annotations

import base64
import datetime
from collections.abc import Callable
from typing import Any

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
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.blocks import (
    publish_blocks,
    retire_blocks,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.enrolment import read_enrolment
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.keys import (
    INSTALLED_POLICY,
    KCV_METHOD,
    HsmKeyOps,
    kcv_hex,
    kek_policy,
    province_key_index,
    use_catalogue,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats import keyblock
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.grants import CityTarget, check_grantable
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import OpenBao
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import HsmToken


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, datetime.date):
        return value.isoformat()
    return str(value)


def plan_envelope(bao: OpenBao, target: CityTarget, fp: str) -> dict[str, Any] | None:
    """The current envelope if it is up to date (same KEK version, same city public key), else None."""
    current = bao.kv_read(bao.layout.mount, bao.layout.city(target.city, "kek"))
    if not current:
        return None
    data = current["data"]
    if int(data.get("kek_version", -1)) >= target.kek_version and data.get("rsa_fingerprint") == fp:
        return data
    return None


def city_objects(target: CityTarget) -> tuple[tuple[str, bytes], tuple[str, bytes]]:
    """(label, CKA_ID) of the city's KEK and of the province's copy of the city's public key."""
    holder = city_holder(target.city_code)
    return (
        (
            key_label("internal", KEK_TYPE, target.kek_version, holder),
            reserved_key_id(KEK_TYPE, target.kek_version, holder),
        ),
        (key_label("internal", RSA_TYPE, 1, holder), reserved_key_id(RSA_TYPE, 1, holder)),
    )


def stale_ids(hsm: HsmToken, target: CityTarget) -> list[tuple[str, str, bytes]]:
    """(label, object class, CKA_ID) of the city's KEK and public key in the province token that lack the ID of the
    label scheme (made before IDs were set). Read only: they are SO objects, set in an SO session."""
    stale = []
    for (label, object_id), object_class in zip(city_objects(target), ("secret_key", "public_key"), strict=True):
        obj = hsm.find_key(label=label, object_class=object_class)
        if obj is not None and hsm.ensure_id(obj, object_id, check_mode=True):
            stale.append((label, object_class, object_id))
    return stale


def assign_ids_as_so(so_session: Callable[[], Any], stale: list[tuple[str, str, bytes]]) -> None:
    """Give the objects of :func:`stale_ids` their CKA_ID in place, in one SO session."""
    with so_session() as so_hsm:
        for label, object_class, object_id in stale:
            so_hsm.ensure_id(so_hsm.get_key(label, object_class, check_validity=False), object_id)


def granted_type_code(target: CityTarget, info: dict[str, Any], key_class: str, version: int, holder: str) -> int:
    """The type code of a granted key, from its CKA_ID in the province token (set from the catalogue by hsm_key)."""
    found = bytes.fromhex(info.get("id") or "")
    if len(found) >= 4 and key_id(key_class, found[1], version, holder) == found:
        return found[1]
    raise DistributionError(
        f"city {target.city}: the province's {info.get('label')} has CKA_ID {found.hex() or '(none)'}, not the label "
        "scheme's (docs/hsm.md), so its block cannot carry the type code: re-issue it (tunion.keymgmt.hsm_key)"
    )


def make_envelope(so_hsm: HsmToken, target: CityTarget, public_der: bytes, fp: str) -> dict[str, Any]:
    """In an SO session: ensure the trusted KEK for the city, wrap it (RSA-OAEP) under the city's public key."""
    (kek_label, kek_id), (rsa_label, rsa_id) = city_objects(target)
    kek = so_hsm.find_key(label=kek_label)
    if kek is None:
        kek = so_hsm.generate_secret(KEK_ALGORITHM, kek_label, kek_id, kek_policy(province=True))
    so_hsm.ensure_id(kek, kek_id)
    old = so_hsm.find_key(label=rsa_label, object_class="public_key")
    if old is not None and so_hsm.public_key_der(old) != public_der:
        so_hsm.destroy(old)
        old = None
    pub = old or so_hsm.import_rsa_public_key(public_der, rsa_label, rsa_id, trusted=True)
    so_hsm.ensure_id(pub, rsa_id)
    wrapped = so_hsm.wrap(pub, kek, mechanism="rsa-oaep")
    return {
        "city": target.city,
        "kek_version": target.kek_version,
        "kek_kcv": kcv_hex(so_hsm, kek),
        "kek_algorithm": KEK_ALGORITHM,
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
    kek_label = key_label("internal", KEK_TYPE, target.kek_version, city_holder(target.city_code))
    kek = hsm.find_key(label=kek_label)
    if kek is None:
        raise DistributionError(f"city {target.city}: KEK {kek_label!r} is not in the province token")
    out: dict[str, tuple[str, dict[str, Any]]] = {}
    for grant in target.grants:
        holder = city_holder(target.city_code)
        if (grant.key_type, grant.version, holder) not in index:
            holder = "province"
        found = index.get((grant.key_type, grant.version, holder))
        if found is None:
            raise DistributionError(
                f"city {target.city}: granted key {grant.key_type} v{grant.version} is not in the province token: "
                "if the catalogue lists it, issue it (playbooks/issue_keys.yml); otherwise correct the grant"
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
        try:  # the narrowest capability the city's copy may have travels under the MAC (docs/keyblock.md)
            mode_of_use = keyblock.mode_of_use_for(info["attributes"])
        except keyblock.KeyBlockError as exc:
            raise DistributionError(f"city {target.city}: {grant.key_type} v{grant.version}: {exc}") from None
        header = keyblock.KeyBlockHeader(
            key_type=grant.key_type,
            type_code=granted_type_code(target, info, key_class, grant.version, holder),
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
            mode_of_use=mode_of_use,
        )
        try:
            block = keyblock.build(ops, kek, key, header)
        except keyblock.KeyBlockError as exc:
            raise DistributionError(f"city {target.city}: {exc}") from None
        out[version_name(grant.key_type, grant.version)] = (block, header.as_dict())
    return out


def refuse_ungrantable(index: dict[tuple[str, int, str], Any], targets: list[CityTarget]) -> None:
    """Second line of defence, by the class in the province token: refused before any city's block is built."""
    for target in targets:
        for grant in target.grants:
            for holder in (city_holder(target.city_code), "province"):
                found = index.get((grant.key_type, grant.version, holder))
                if found is not None:
                    check_grantable(target.city, grant, found[1])


def city_in_step(
    bao: OpenBao, city: str, envelope: dict[str, Any], blocks: dict[str, tuple[str, dict[str, Any]]]
) -> bool:
    """True when the city's last report shows the current KEK and exactly the KCVs of the blocks it is granted."""
    record = bao.kv_read(bao.layout.mount, bao.layout.city(city, "status"))
    if not record:
        return False
    status = record["data"]
    if status.get("installed_policy") != INSTALLED_POLICY:  # installed under an older policy: the city re-checks
        return False
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
                bao.kv_write(bao.layout.mount, bao.layout.city(target.city, "kek"), envelope)
                envelopes[target.city] = envelope
    ready = [t for t in targets if t.city in envelopes]
    stale: dict[str, list[tuple[str, str, bytes]]] = {}
    if ready:
        with user_session() as hsm:
            use_catalogue(hsm, catalogue)
            ops = HsmKeyOps(hsm)
            index = province_key_index(hsm)
            refuse_ungrantable(index, ready)
            for target in ready:
                envelope = envelopes[target.city]
                blocks = build_city_blocks(
                    hsm, ops=ops, index=index, target=target, kek_kcv=envelope["kek_kcv"], issuer=issuer
                )
                written = publish_blocks(bao, target.city, blocks, check_mode)
                retired = retire_blocks(bao, target.city, blocks, check_mode)
                report[target.city]["blocks_written"] = written
                report[target.city]["blocks_retired"] = retired
                stale[target.city] = stale_ids(hsm, target)
                report[target.city]["ids_set"] = [label for label, _cls, _id in stale[target.city]]
                fresh = not written and not retired and report[target.city]["envelope"] == "unchanged"
                if fresh and city_in_step(bao, target.city, envelope, blocks):
                    in_step.append(target.city)
    if any(stale.values()) and not check_mode:
        assign_ids_as_so(so_session, [item for items in stale.values() for item in items])
    for target, _wrapped in to_wrap:
        if target.city not in envelopes:  # check mode: every block would be made under the new KEK
            report[target.city]["blocks_written"] = [version_name(g.key_type, g.version) for g in target.grants]
    return {
        "changed": any(
            r["envelope"] != "unchanged" or r["blocks_written"] or r.get("blocks_retired") or r.get("ids_set")
            for r in report.values()
        ),
        "cities": report,
        "awaiting_enrolment": awaiting,
        "in_step": in_step,
        "to_install": [t.city for t in targets if t.city not in in_step],
    }
