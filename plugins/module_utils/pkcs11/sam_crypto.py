# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HSM side of SAM injection: every key, cryptogram and MAC is computed inside the HSM (docs/sam-profile.md).

Built on :class:`hsm.HsmToken`. Per SAM, with its serial as diversification data:

* ``MK = PBOC(SAM issuer key, serial)``, a derive-only session object: a KDF parent, never a cipher;
* the loading channel (mutual authentication, modelled on GlobalPlatform SCP02/SCP03): the station sends a fresh
  host challenge (INITIALIZE UPDATE), the SAM answers its own challenge and a card cryptogram; only when that
  checks out does the station send anything computed under a key. ``SK = 3DES-ECB(MK, host/card challenge mix)``
  (derive-only), ``S-ENC``, ``S-MAC``, ``S-DEK = PBOC(SK, constant)``; card cryptogram
  ``MAC(S-ENC, host || card)``, host cryptogram ``MAC(S-ENC, card || host)``; every command after it carries a
  C-MAC under S-MAC chained over the session;
* key cryptogram ``3DES-CBC(S-DEK, IV = 3DES(S-DEK, n), C_WrapKey(batch KEK, key, CKM_AES_KEY_WRAP))`` for the n-th
  WRITE KEY: the province's keys carry ``CKA_WRAP_WITH_TRUSTED``, so they are first wrapped under the SO-created
  trusted batch transport KEK (the lab's compromise: that inner block is the same for every SAM of the batch; a
  production HSM wraps under a per-SAM key, docs/sam-profile.md), and that block is encrypted under the session's
  own S-DEK, so no cryptogram is ever sent twice;
* verification: ``DPK`` = the catalogue's key diversified down to the test card (issuer factor, then card serial, for
  the Ministry-level master), ``SESPK = 3DES(DPK, random || counter || PSAM serial)`` as a single-DES session key,
  ``MAC1 = DES-CBC-MAC(SESPK, ...)``, ``MAC2 = DES-CBC-MAC(SESPK, amount)`` (see :meth:`SamCrypto.expected_mac1`).

Session objects made here are destroyed as soon as a SAM is done; none is a token object.
"""

from __future__ import annotations

import hmac
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

try:
    from pkcs11 import Attribute, Mechanism, ObjectClass
    from pkcs11 import exceptions as p11e
    from pkcs11.util.rsa import decode_rsa_public_key
except ImportError:  # pragma: no cover - pkcs11/session.py reports the missing library (HAS_PKCS11)
    pass

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import HsmError, SamError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import key_id, key_label
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.algorithms import diversification_data
from ansible_collections.tunion.keymgmt.plugins.module_utils.pcsc.psam import (
    ALGORITHM_CODES,
    SESSION_DEK,
    SESSION_ENC,
    SESSION_MAC,
    session_base_data,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.policy import KeyPolicy
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import HsmToken

#: MK and SK: KDF parents only (no CKA_ENCRYPT), session objects, never exported
_KDF_PARENT = KeyPolicy(usage="derive", token=False, extractable=False)


#: the channel's session keys S-ENC, S-MAC, S-DEK: CBC encryption (cryptograms, CBC-MACs) for one SAM session
_SESSION_KEY = KeyPolicy(usage="cryptogram", token=False, extractable=False)


_CARD_KEY = _KDF_PARENT


def pad80(data: bytes) -> bytes:
    data = data + b"\x80"
    return data + bytes(-len(data) % 8)


def _p11(what: str, exc: Exception) -> HsmError:
    return HsmError(f"{what}: PKCS#11 {type(exc).__name__}")


class SamKeys:
    """One SAM's keys and its loading-channel session: MK, then SK and S-ENC/S-MAC/S-DEK, destroyed on close."""

    def __init__(self, crypto: SamCrypto, serial: str, labels: tuple[str, ...] = ()) -> None:
        """Every operation runs in the one shared session, under ``lock``: python-pkcs11 over SoftHSM is not safe
        with sessions used from several threads at once (measured: GeneralError within a few calls)."""
        self.crypto = crypto
        self.serial = serial
        self.hsm = crypto.hsm
        self.lock = crypto.lock
        with self.lock:
            for label in labels:  # the batch-level inner blocks need no challenge: made while the SAM is still read
                crypto.inner_block(label)
            self.mk = self.hsm.derive_pboc(crypto.issuer, serial, policy=_KDF_PARENT)
        self._session: dict[str, Any] = {}
        self._challenges = (b"", b"")
        self._icv = bytes(8)
        self._seq = 0

    def _mac(self, key: Any, data: bytes, icv: bytes = bytes(8)) -> bytes:
        """Full 8-byte 3DES CBC-MAC (ISO 9797-1 algorithm 1, padding method 2) from ``icv``, in the HSM."""
        return self.hsm.encrypt(key, pad80(data), mode="cbc", iv=icv)[-8:]

    def open_session(self, host: bytes, card: bytes, card_cryptogram: bytes) -> None:
        """Derive the session keys from both challenges and check the SAM's cryptogram. A SAM that fails is a SAM
        that does not hold MK (a copy of a registered serial, a card the province did not manufacture)."""
        self.close_session()
        hsm = self.hsm
        sk = hsm.derive_ecb(self.mk, session_base_data(host, card), policy=_KDF_PARENT)
        try:
            for name, const in (("enc", SESSION_ENC), ("mac", SESSION_MAC), ("dek", SESSION_DEK)):
                self._session[name] = hsm.derive_pboc(sk, const, policy=_SESSION_KEY)
        finally:
            with suppress(Exception):
                sk.destroy()
        self._challenges = (host, card)
        self._icv, self._seq = bytes(8), 0
        if not hmac.compare_digest(self._mac(self._session["enc"], host + card), card_cryptogram):
            self.close_session()
            raise SamAuthenticationError(
                f"SAM {self.serial} failed authentication: its card cryptogram does not match the master key the "
                "province's HSM derives for this serial (not a SAM the province manufactured, or a copy of a "
                "registered serial); nothing was sent to it, it is moved out and not retried"
            )

    def _cmac(self, header: bytes, body: bytes) -> bytes:
        self._icv = self._mac(self._session["mac"], header + body, self._icv)
        return self._icv

    def external_authenticate(self) -> bytes:
        """84 82 data: host cryptogram ``MAC(S-ENC, card || host)`` and its C-MAC."""
        if not self._session:
            raise SamError(f"SAM {self.serial}: no authenticated session (INITIALIZE UPDATE first)")
        host, card = self._challenges
        host_cryptogram = self._mac(self._session["enc"], card + host)
        return host_cryptogram + self._cmac(bytes([0x84, 0x82, 0x00, 0x00, 0x10]), host_cryptogram)

    def write_key_apdu(self, label: str, usage: int, version: int, algorithm: str, levels: int) -> bytes:
        """84 D4 01 <levels> 26: usage version algorithm KCV(3) cryptogram(24) C-MAC(8)."""
        if not self._session:
            raise SamError(f"SAM {self.serial}: no authenticated session; no key is sent")
        c = self.crypto
        self._seq += 1
        kcv, inner = c.kcv(label), c.inner_block(label)  # batch-level, cached
        header = bytes([usage, version, ALGORITHM_CODES[algorithm]]) + bytes.fromhex(kcv)
        counter = self._seq.to_bytes(8, "big")
        # CBC from IV 0 over (n || inner) minus its first block = CBC from IV 3DES(S-DEK, n) over the inner block
        cryptogram = self.hsm.encrypt(self._session["dek"], counter + inner, mode="cbc")[8:]
        body = header + cryptogram
        apdu_header = bytes([0x84, 0xD4, 0x01, levels, len(body) + 8])
        return apdu_header + body + self._cmac(apdu_header, body)

    def close_session(self) -> None:
        for obj in self._session.values():
            with suppress(Exception):
                obj.destroy()
        self._session = {}

    def close(self) -> None:
        self.close_session()
        with suppress(Exception):
            self.mk.destroy()


class SamAuthenticationError(SamError):
    """A SAM that could not prove it holds its master key: refused, moved out, never retried in the run."""


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
        """The SAM's MK (and the inner blocks of ``labels``), made in the HSM; the caller closes them."""
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

    def card_key(self, label: str, factors: bytes) -> Any:
        """The test card's key (DPK) under ``label``: diversified by each 8-byte factor, the last (the issuer's)
        first, the card serial last, as the PSAM does. Derived once per batch: the same for every SAM."""
        if (label, factors) not in self._card_keys:
            key = self.key(label)
            made: list[Any] = []
            try:
                for i in range(len(factors) - 8, -1, -8):
                    key = self.hsm.derive_pboc(key, factors[i : i + 8], policy=_CARD_KEY)
                    made.append(key)
            finally:
                for obj in made[:-1]:
                    with suppress(Exception):
                        obj.destroy()
            self._card_keys[(label, factors)] = key
        return self._card_keys[(label, factors)]

    def close(self) -> None:
        for obj in self._card_keys.values():
            with suppress(Exception):
                obj.destroy()
        self._card_keys.clear()

    # ------------------------------------------------------------------ functional verification
    def expected_mac1(  # noqa: PLR0917 - the fields of one purchase
        self, label: str, factors: bytes, rnd: bytes, ctr: bytes, tsn: bytes, tail: bytes, with_mac2: bool = True
    ) -> tuple[bytes, bytes]:
        """(MAC1, MAC2) as the HSM computes them from the card key it derives itself. ``tail`` = amount type
        terminal time; ``factors`` = card serial, then (two-level) the issuer factor. MAC2 is ``b""`` unless
        ``with_mac2``.

        SESPK is a single-DES key. SoftHSM 2.6.1 lists CKM_DES_CBC but cannot run it (OpenSSL 3 without its legacy
        provider), so SESPK is derived as the 2-key 3DES key ``SESPK || SESPK`` (data ``D || D``): 3DES-EDE with
        equal halves is single DES, so its CBC encryption gives the same MAC.
        """
        dpk = self.card_key(label, factors)
        d = rnd + ctr + tsn[2:]
        sespk = self.hsm.derive_ecb(dpk, d + d, algorithm="3DES-2KEY", check_validity=False)
        try:
            mac1 = self.hsm.encrypt(sespk, pad80(tail), mode="cbc")[-8:][:4]
            mac2 = self.hsm.encrypt(sespk, pad80(tail[:4]), mode="cbc")[-8:][:4] if with_mac2 else b""
        finally:
            with suppress(Exception):
                sespk.destroy()
        return mac1, mac2

    def expected_des_mac(self, label: str, factors: bytes, data: bytes, iv: bytes = bytes(8)) -> bytes:
        """80 FA MAC of the test card's key (3DES CBC-MAC from ``iv``, padding method 2): the same for every SAM
        holding ``label``, so computed once."""
        if (label, factors + iv, data) not in self._des_macs:
            parent = self.card_key(label, factors[8:]) if len(factors) > 8 else self.key(label)
            dk = self.hsm.derive_pboc(parent, factors[:8])  # the card level, with CKA_ENCRYPT for the MAC
            try:
                mac = self.hsm.encrypt(dk, pad80(data), mode="cbc", iv=iv)[-8:][:4]
                self._des_macs[(label, factors + iv, data)] = mac
            finally:
                with suppress(Exception):
                    dk.destroy()
        return self._des_macs[(label, factors + iv, data)]


def ensure_batch_kek(so_hsm: HsmToken, label: str, key_id: bytes | None = None) -> tuple[Any, bool]:
    """In an SO session: the trusted batch transport KEK (public, CKA_TRUSTED), created if missing.

    It may wrap the province's keys (they are CKA_WRAP_WITH_TRUSTED) and is itself exportable only under a trusted
    key: the SAM manufacturer's RSA key, which the SO registered (:func:`register_manufacturer`).
    """
    kek = so_hsm.find_key(label=label)
    if kek is not None:
        return kek, False
    policy = KeyPolicy(usage="kek", private=False, trusted=True, extractable=True, extra={"unwrap": False})
    return so_hsm.generate_secret("AES-128", label, key_id, policy), True


#: type code of a SAM manufacturer's registered RSA public key (class internal; 0x33 and 0x34 are taken)
MANUFACTURER_CODE = 0x35


def manufacturer_label(number: int) -> str:
    """``internal.sam_manufacturer.vNN.province``: the SO's registration of SAM manufacturer ``number`` (1..255)."""
    if isinstance(number, bool) or not isinstance(number, int) or not 1 <= number <= 255:
        raise HsmError(f"SAM manufacturer number {number!r}: 1..255")
    return key_label("internal", "sam_manufacturer", number)


def _public_numbers(obj: Any) -> tuple[bytes, bytes]:
    return bytes(obj[Attribute.MODULUS]), bytes(obj[Attribute.PUBLIC_EXPONENT]).lstrip(b"\x00")


def register_manufacturer(
    so_hsm: HsmToken, number: int, manufacturer_der: bytes, *, replace: bool = False
) -> tuple[Any, bool]:
    """In an SO session: register the SAM manufacturer's RSA public key as a trusted token object (CKA_TRUSTED).

    Only a registered key ever receives a SAM master key or the batch KEK. A number already registered with another
    key is refused unless ``replace``: replacing a manufacturer's key is the SO's deliberate act.
    """
    label = manufacturer_label(number)
    tpl = decode_rsa_public_key(manufacturer_der)
    want = (bytes(tpl[Attribute.MODULUS]), bytes(tpl[Attribute.PUBLIC_EXPONENT]).lstrip(b"\x00"))
    existing = so_hsm.find_key(label=label, object_class=ObjectClass.PUBLIC_KEY)
    if existing is not None:
        if _public_numbers(existing) == want:
            return existing, False
        if not replace:
            raise HsmError(
                f"SAM manufacturer {number} is registered with another RSA key; the SO must retire the old one "
                "before registering a new key"
            )
        so_hsm.destroy(existing)
    key = so_hsm.import_rsa_public_key(
        manufacturer_der, label, key_id("internal", MANUFACTURER_CODE, number), trusted=True
    )
    return key, True


def registered_manufacturer(hsm: HsmToken, number: int) -> Any:
    """The manufacturer's key the SO registered and marked trusted; anything else is refused (issue 10, item 3)."""
    label = manufacturer_label(number)
    pub = hsm.find_key(label=label, object_class=ObjectClass.PUBLIC_KEY)
    if pub is None:
        raise HsmError(
            f"no SAM manufacturer {number} is registered in token {hsm.label!r}: the SO registers a manufacturer's "
            "RSA key (trusted) before any SAM master key is exported to it; nothing was exported"
        )
    try:
        trusted = bool(pub[Attribute.TRUSTED])
    except p11e.PKCS11Error:
        trusted = False
    if not trusted:
        raise HsmError(
            f"the key labelled {label!r} is not marked trusted by the SO: no SAM master key is exported to it"
        )
    return pub


def _rsa_wrap(pub: Any, key: Any, what: str) -> bytes:
    try:
        return bytes(pub.wrap_key(key, mechanism=Mechanism.RSA_PKCS_OAEP))
    except p11e.PKCS11Error as exc:
        raise _p11(what, exc) from None


def export_batch_kek(so_hsm: HsmToken, label: str, manufacturer: int) -> bytes:
    """In an SO session: the batch KEK, RSA-OAEP wrapped under the registered manufacturer's key."""
    kek = so_hsm.get_key(label, check_validity=False)
    pub = registered_manufacturer(so_hsm, manufacturer)
    return _rsa_wrap(pub, kek, "wrapping the batch KEK for the SAM manufacturer")


def manufacture_master_keys(hsm: HsmToken, issuer_label: str, manufacturer: int, serials: list[str]) -> list[bytes]:
    """In a user session: each new SAM's master key ``PBOC(issuer, serial)``, RSA-OAEP wrapped for the manufacturer.

    This is the province's side of SAM pre-personalisation: the clear master key exists only in the HSM and, once
    unwrapped by the manufacturer, in the SAM. The manufacturer's key must be the one the SO registered and marked
    trusted (:func:`register_manufacturer`), and each master key is made CKA_WRAP_WITH_TRUSTED: the token itself
    refuses to wrap it under any other key.
    """
    issuer = hsm.get_key(issuer_label)
    pub = registered_manufacturer(hsm, manufacturer)
    policy = KeyPolicy(usage="derive", token=False, extractable=True, wrap_with_trusted=True)
    out = []
    for serial in serials:
        diversification_data(serial)
        mk = hsm.derive_pboc(issuer, serial, policy=policy)
        try:
            out.append(_rsa_wrap(pub, mk, f"wrapping the master key of SAM {serial} for its manufacturer"))
        finally:
            mk.destroy()
    return out


__all__ = [
    "MANUFACTURER_CODE",
    "SamAuthenticationError",
    "SamCrypto",
    "SamKeys",
    "ensure_batch_kek",
    "export_batch_kek",
    "manufacture_master_keys",
    "manufacturer_label",
    "pad80",
    "register_manufacturer",
    "registered_manufacturer",
]
