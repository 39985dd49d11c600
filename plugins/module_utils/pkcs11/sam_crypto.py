# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HSM side of SAM injection: every key, cryptogram and MAC is computed inside the HSM (docs/sam-profile.md).

Built on :class:`hsm.HsmToken`. Per SAM, with its serial as diversification data:

* ``MK = PBOC(SAM issuer key, serial)``: EXTERNAL AUTHENTICATE answers ``3DES-ECB(MK, challenge)``;
* ``TK = PBOC(MK, "TUNIONTK")``: the SAM's own transport key;
* key cryptogram ``3DES-CBC(TK, C_WrapKey(batch KEK, key, CKM_AES_KEY_WRAP))``: the province's keys carry
  ``CKA_WRAP_WITH_TRUSTED``, so they are first wrapped under the SO-created trusted AES-128 *batch transport KEK*
  the SAMs were manufactured with (RFC 3394, which carries its own integrity check; SoftHSM 2.6.1 cannot
  C_WrapKey with CKM_DES3_CBC), and that block is then encrypted under the SAM's own TK, binding it to one SAM;
* MAC ``3DES-CBC(TK, pad(challenge || seq || 80 D4 01 00 || header || cryptogram))``, last block, 4 bytes: a CBC-MAC
  computed as CBC encryption in the HSM (SoftHSM 2.6.1 has no DES3 retail-MAC mechanism);
* verification: ``DPK = PBOC(purchase key, card)``, ``SESPK = 3DES(DPK, random || counter || PSAM serial)`` as a
  single-DES session key, ``MAC1 = DES-CBC-MAC(SESPK, ...)`` (see :meth:`SamCrypto.expected_mac1`).

Session objects made here are destroyed as soon as a SAM is done; none is a token object.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

try:
    from pkcs11 import Attribute, Mechanism
    from pkcs11 import exceptions as p11e
    from pkcs11.util.rsa import decode_rsa_public_key
except ImportError:  # pragma: no cover - pkcs11/session.py reports the missing library (HAS_PKCS11)
    pass

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import HsmError
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.algorithms import diversification_data
from ansible_collections.tunion.keymgmt.plugins.module_utils.pcsc.psam import ALGORITHM_CODES, TRANSPORT_DIVERSIFIER
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.policy import KeyPolicy
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import HsmToken

#: keys that live only for one SAM: encrypt (cryptograms, CBC-MACs) and derive, never exported
_SAM_KEY = KeyPolicy(usage="cryptogram", token=False, extractable=False, extra={"derive": True})


_CARD_KEY = KeyPolicy(usage="derive", token=False, extractable=False)


def pad80(data: bytes) -> bytes:
    data = data + b"\x80"
    return data + bytes(-len(data) % 8)


def _p11(what: str, exc: Exception) -> HsmError:
    return HsmError(f"{what}: PKCS#11 {type(exc).__name__}")


class SamKeys:
    """The per-SAM keys of one session: MK (authentication) and TK (transport), destroyed on close."""

    def __init__(self, crypto: SamCrypto, serial: str, labels: tuple[str, ...] = ()) -> None:
        self.crypto = crypto
        self.serial = serial
        hsm = crypto.hsm
        self.mk = hsm.derive_pboc(crypto.issuer, serial, policy=_SAM_KEY)
        self.tk = hsm.derive_pboc(self.mk, TRANSPORT_DIVERSIFIER, policy=_SAM_KEY)
        #: key cryptograms need no challenge: made here, while the SAM is still being read
        self.cryptograms = {label: hsm.encrypt(self.tk, crypto.inner_block(label), mode="cbc") for label in labels}

    def auth_cryptogram(self, challenge: bytes) -> bytes:
        return self.crypto.hsm.encrypt(self.mk, challenge, mode="ecb")

    def write_key_body(  # noqa: PLR0917 - the fields of one WRITE KEY
        self, label: str, usage: int, version: int, algorithm: str, challenge: bytes, seq: int
    ) -> bytes:
        """WRITE KEY data: usage version algorithm KCV(3) cryptogram(16) MAC(4)."""
        c = self.crypto
        header = bytes([usage, version, ALGORITHM_CODES[algorithm]]) + bytes.fromhex(c.kcv(label))
        cryptogram = self.cryptograms.get(label) or c.hsm.encrypt(self.tk, c.inner_block(label), mode="cbc")
        mac_input = challenge + bytes([seq, 0x80, 0xD4, 0x01, 0x00]) + header + cryptogram
        mac = c.hsm.encrypt(self.tk, pad80(mac_input), mode="cbc")[-8:][:4]
        return header + cryptogram + mac

    def close(self) -> None:
        for obj in (self.tk, self.mk):
            with suppress(Exception):
                obj.destroy()


class SamCrypto:
    """HSM operations for SAM injection on one logged-in session (calls are serialised by ``lock``)."""

    def __init__(self, hsm: HsmToken, issuer_label: str, kek_label: str) -> None:
        self.hsm = hsm
        self.lock = threading.RLock()
        self.issuer_label = issuer_label
        self.kek_label = kek_label
        self._issuer: Any = None
        self._kek: Any = None
        self._keys: dict[str, Any] = {}
        self._kcv: dict[str, str] = {}
        self._inner: dict[str, bytes] = {}
        self._card_keys: dict[tuple[str, bytes], Any] = {}
        self._des_macs: dict[tuple[str, bytes, bytes], bytes] = {}

    @property
    def issuer(self) -> Any:
        """The SAM issuer key, looked up when a SAM first needs it (a run with no SAM touches no key)."""
        if self._issuer is None:
            self._issuer = self.hsm.get_key(self.issuer_label)
        return self._issuer

    @property
    def kek(self) -> Any:
        if self._kek is None:
            kek = self.hsm.find_key(label=self.kek_label)
            if kek is None:
                raise HsmError(
                    f"no batch transport KEK labelled {self.kek_label!r} in token {self.hsm.label!r}: the SAMs' "
                    "manufacturing creates it (SO, trusted AES-128; docs/sam-profile.md), and these SAMs need it"
                )
            self._kek = kek
        return self._kek

    def key(self, label: str) -> Any:
        if label not in self._keys:
            self._keys[label] = self.hsm.get_key(label)
        return self._keys[label]

    def kcv(self, label: str) -> str:
        if label not in self._kcv:
            self._kcv[label] = self.hsm.kcv(self.key(label)).hex().upper()
        return self._kcv[label]

    def inner_block(self, label: str) -> bytes:
        """``C_WrapKey(batch KEK, key)``, once per key and batch (the same for every SAM of the batch)."""
        if label not in self._inner:
            self._inner[label] = self.hsm.wrap(self.kek, self.key(label), mechanism="aes-key-wrap")
        return self._inner[label]

    def sam_keys(self, serial: str, labels: tuple[str, ...] = ()) -> SamKeys:
        """The SAM's MK and TK (and the cryptograms of ``labels``), made in the HSM; the caller closes them."""
        return SamKeys(self, serial, labels)

    def cached_kcv(self, label: str) -> str | None:
        """The KCV if already known (no HSM call, no lock needed)."""
        return self._kcv.get(label)

    @contextmanager
    def sam(self, serial: str) -> Iterator[SamKeys]:
        keys = SamKeys(self, serial)
        try:
            yield keys
        finally:
            keys.close()

    def card_key(self, label: str, card: bytes) -> Any:
        """The test card's key under ``label`` (DPK), derived once per batch: the same for every SAM of a city."""
        if (label, card) not in self._card_keys:
            self._card_keys[(label, card)] = self.hsm.derive_pboc(self.key(label), card, policy=_CARD_KEY)
        return self._card_keys[(label, card)]

    def close(self) -> None:
        for obj in self._card_keys.values():
            with suppress(Exception):
                obj.destroy()
        self._card_keys.clear()

    # ------------------------------------------------------------------ functional verification
    def expected_mac1(  # noqa: PLR0917 - the fields of one purchase
        self, label: str, card: bytes, rnd: bytes, ctr: bytes, tsn: bytes, tail: bytes
    ) -> bytes:
        """MAC1 as the HSM computes it from the card key it derives itself. ``tail`` = amount type terminal time.

        SESPK is a single-DES key. SoftHSM 2.6.1 lists CKM_DES_CBC but cannot run it (OpenSSL 3 without its legacy
        provider), so SESPK is derived as the 2-key 3DES key ``SESPK || SESPK`` (data ``D || D``): 3DES-EDE with
        equal halves is single DES, so its CBC encryption gives the same MAC.
        """
        dpk = self.card_key(label, card)
        d = rnd + ctr + tsn[2:]
        sespk = self.hsm.derive_ecb(dpk, d + d, algorithm="3DES-2KEY", check_validity=False)
        try:
            return self.hsm.encrypt(sespk, pad80(tail), mode="cbc")[-8:][:4]
        finally:
            with suppress(Exception):
                sespk.destroy()

    def expected_des_mac(self, label: str, card: bytes, data: bytes) -> bytes:
        """80 FA MAC of the test card's key: the same for every SAM holding ``label``, so computed once."""
        if (label, card, data) not in self._des_macs:
            dk = self.hsm.derive_pboc(self.key(label), card)
            try:
                self._des_macs[(label, card, data)] = self.hsm.encrypt(dk, pad80(data), mode="cbc")[-8:][:4]
            finally:
                with suppress(Exception):
                    dk.destroy()
        return self._des_macs[(label, card, data)]


def ensure_batch_kek(so_hsm: HsmToken, label: str, key_id: bytes | None = None) -> tuple[Any, bool]:
    """In an SO session: the trusted batch transport KEK (public, CKA_TRUSTED), created if missing.

    It may wrap the province's keys (they are CKA_WRAP_WITH_TRUSTED) and is itself exportable only under a trusted
    key: the SAM manufacturer's RSA key, which the SO vouches for in :func:`export_batch_kek`.
    """
    kek = so_hsm.find_key(label=label)
    if kek is not None:
        return kek, False
    policy = KeyPolicy(usage="kek", private=False, trusted=True, extractable=True, extra={"unwrap": False})
    return so_hsm.generate_secret("AES-128", label, key_id, policy), True


def _rsa_session_key(hsm: HsmToken, der: bytes, trusted: bool) -> Any:
    tpl = decode_rsa_public_key(der) | {
        Attribute.TOKEN: False,
        Attribute.PRIVATE: False,
        Attribute.WRAP: True,
        Attribute.ENCRYPT: False,
        Attribute.VERIFY: False,
    }
    if trusted:
        tpl[Attribute.TRUSTED] = True
    try:
        return hsm.session.create_object(tpl)
    except p11e.PKCS11Error as exc:
        raise _p11("importing the SAM manufacturer's RSA public key", exc) from None


def _rsa_wrap(pub: Any, key: Any, what: str) -> bytes:
    try:
        return bytes(pub.wrap_key(key, mechanism=Mechanism.RSA_PKCS_OAEP))
    except p11e.PKCS11Error as exc:
        raise _p11(what, exc) from None


def export_batch_kek(so_hsm: HsmToken, label: str, manufacturer_der: bytes) -> bytes:
    """In an SO session: the batch KEK, RSA-OAEP wrapped under the manufacturer's key (which the SO trusts)."""
    kek = so_hsm.get_key(label, check_validity=False)
    pub = _rsa_session_key(so_hsm, manufacturer_der, trusted=True)
    try:
        return _rsa_wrap(pub, kek, "wrapping the batch KEK for the SAM manufacturer")
    finally:
        pub.destroy()


def manufacture_master_keys(
    hsm: HsmToken, issuer_label: str, manufacturer_der: bytes, serials: list[str]
) -> list[bytes]:
    """In a user session: each new SAM's master key ``PBOC(issuer, serial)``, RSA-OAEP wrapped for the manufacturer.

    This is the province's side of SAM pre-personalisation: the clear master key exists only in the HSM and, once
    unwrapped by the manufacturer, in the SAM.
    """
    issuer = hsm.get_key(issuer_label)
    pub = _rsa_session_key(hsm, manufacturer_der, trusted=False)
    policy = KeyPolicy(usage="cryptogram", token=False, extractable=True, wrap_with_trusted=False)
    out = []
    try:
        for serial in serials:
            diversification_data(serial)
            mk = hsm.derive_pboc(issuer, serial, policy=policy)
            try:
                out.append(_rsa_wrap(pub, mk, f"wrapping the master key of SAM {serial} for its manufacturer"))
            finally:
                mk.destroy()
    finally:
        pub.destroy()
    return out


__all__ = [
    "SamCrypto",
    "SamKeys",
    "ensure_batch_kek",
    "export_batch_kek",
    "manufacture_master_keys",
    "pad80",
]
