# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Keys of distribution in an HSM: the key-block HSM adapter, KEK and installed-key policies, KCVs, and the
province's index of its own keys.
"""

from __future__ import annotations

import datetime
import hashlib
import hmac
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import DistributionError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import parse_key_label
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats import keyblock
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.algorithms import USAGES
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.catalogue import load_catalogue
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.policy import KeyPolicy
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import HsmToken

RSA_BITS = 3072


KCV_METHOD = "ecb"


def fingerprint(public_der: bytes) -> str:
    """KCV-like fingerprint of a public key: the first 8 bytes of SHA-256 over its PKCS#1 DER, in hex."""
    return hashlib.sha256(public_der).hexdigest()[:16].upper()


class HsmKeyOps:
    """`KeyBlockHsm` over an hsm.HsmToken: KWP wrap, KBAK derivation and CMAC, all in the HSM."""

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


#: raised whenever installed_policy changes: a city whose status names an older one is not in step, so its next pass
#: re-checks (and replaces) the keys it holds
INSTALLED_POLICY = 2


def installed_policy(header: keyblock.KeyBlockHeader) -> KeyPolicy:
    """A key a city receives: sensitive, never extractable (header exportability N), with only the capabilities its
    MAC-verified mode of use names (never CKA_ENCRYPT: a city PIN holder must not compute card keys as data), and
    the block's validity as CKA_START_DATE/CKA_END_DATE."""
    caps = keyblock.MODES_OF_USE.get(header.mode_of_use)
    if caps is None:
        raise DistributionError(f"key block {header.key_type!r}: no installed policy for mode {header.mode_of_use!r}")
    usage = "derive" if caps == ("derive",) else "mac"
    return KeyPolicy(
        usage=usage,
        extractable=False,
        start_date=datetime.date.fromisoformat(header.not_before),
        end_date=datetime.date.fromisoformat(header.not_after),
    )


#: what installed_policy leaves out of the capabilities a key may carry: reported, and replaced by a pass
CAPABILITIES = ("encrypt", "decrypt", "sign", "verify", "wrap", "unwrap", "derive")


def policy_drift(hsm: HsmToken, key: Any, policy: KeyPolicy, header: keyblock.KeyBlockHeader) -> list[str]:
    """How an installed key differs from ``policy`` (capabilities, sensitivity, validity dates); [] when it does not.

    SoftHSM 2.6.1 cannot return the dates of a private object that has them (CKR_GENERAL_ERROR; a key without dates
    reads as empty): there a key with dates is accepted without comparing them (docs/distribution.md)."""
    info = hsm.describe(key, with_kcv=False)
    attrs = info["attributes"]
    wanted = set(USAGES[policy.usage])
    drift = [f"CKA_{cap.upper()} {attrs.get(cap)}" for cap in CAPABILITIES if attrs.get(cap, False) != (cap in wanted)]
    if not attrs.get("sensitive") or attrs.get("extractable"):
        drift.append("not sensitive or extractable")
    if info["validity_source"] == "token":
        have = (info["not_before"], info["not_after"])
        if have != (header.not_before, header.not_after):
            drift.append(f"validity {have[0]}..{have[1]}, the block's {header.not_before}..{header.not_after}")
    return drift


def kcv_hex(hsm: HsmToken, key: Any) -> str:
    return hsm.kcv(key, KCV_METHOD).hex().upper()


def use_catalogue(hsm: HsmToken, catalogue: list[dict[str, Any]] | None) -> None:
    """Let the token find validity periods in the catalogue (SoftHSM cannot return a private key's dates)."""
    if catalogue:
        hsm.validity_lookup = load_catalogue(catalogue).validity_for


def province_key_index(hsm: HsmToken) -> dict[tuple[str, int, str], Any]:
    """(type, version, holder) -> key object for every project-labelled secret key in the province token."""
    index = {}
    for obj in hsm.list_keys("secret_key"):
        name = parse_key_label(obj.label or "")
        if name is not None:
            index[(name.key_type, name.version, name.holder)] = (obj, name.key_class)
    return index
