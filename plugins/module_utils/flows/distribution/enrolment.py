# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""City side, enrolment: the city's RSA transport pair, and its public key published in OpenBao."""

from __future__ import annotations

import base64

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import DistributionError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import (
    RSA_TYPE,
    city_holder,
    key_label,
    reserved_key_id,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.keys import RSA_BITS, fingerprint
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import OpenBao
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import HsmToken


def ensure_city_rsa(hsm: HsmToken, city_code: str, check_mode: bool) -> tuple[bool, bytes | None]:
    """The city's RSA transport pair (private key not extractable). Returns (created, public DER). A pair made before
    IDs were set gets its CKA_ID at the city's next installation pass (install.assign_ids)."""
    label = key_label("internal", RSA_TYPE, 1, city_holder(city_code))
    pub = hsm.find_key(label=label, object_class="public_key")
    priv = hsm.find_key(label=label, object_class="private_key")
    if pub is not None and priv is not None:
        return False, hsm.public_key_der(pub)
    if pub is not None or priv is not None:
        raise DistributionError(
            f"token {hsm.label!r} holds half of the RSA pair {label!r}; remove it (or re-provision) and re-enrol"
        )
    if check_mode:
        return True, None
    pub, _private = hsm.generate_rsa_keypair(RSA_BITS, label, reserved_key_id(RSA_TYPE, 1, city_holder(city_code)))
    return True, hsm.public_key_der(pub)


def publish_enrolment(
    bao: OpenBao, city: str, city_code: str, public_der: bytes | None, check_mode: bool
) -> tuple[bool, str | None]:
    """Publish the city's public key and fingerprint unless OpenBao already has the same. Returns (changed, fp)."""
    if public_der is None:
        return True, None
    fp = fingerprint(public_der)
    current = bao.kv_read(bao.layout.mount, bao.layout.city(city, "enrolment"))
    if current and current["data"].get("fingerprint") == fp:
        return False, fp
    if current:
        # written once: the city policy lets no city identity overwrite it (a stolen AppRole credential must not
        # be able to put its own public key in front of the province)
        raise DistributionError(
            f"city {city}: OpenBao holds the enrolment of another public key (fingerprint "
            f"{current['data'].get('fingerprint')}), this node's key is {fp}. An enrolment is written once, by the "
            "city's first enrolment, and no city identity may replace it: if this node's key is the genuine new "
            "one, confirm it with the province's key officer out of band; the province clears the old enrolment "
            f"(revocation does, or delete {bao.layout.city(city, 'enrolment')} with the province token) and the "
            "next run enrols this key; nothing was changed"
        )
    if not check_mode:
        bao.kv_write(
            bao.layout.mount,
            bao.layout.city(city, "enrolment"),
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


def read_enrolment(bao: OpenBao, city: str) -> tuple[bytes, str] | None:
    current = bao.kv_read(bao.layout.mount, bao.layout.city(city, "enrolment"))
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
