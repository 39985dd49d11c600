# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""One logged-in session on one token (:class:`HsmToken`): keys, KCVs, diversification, wrapping.

* clear key material never leaves the HSM: keys are created sensitive, and only wrapped under *trusted* KEKs
  (``CKA_WRAP_WITH_TRUSTED``) can they be exported (粤交〔2019〕11号 第十六条: 落实密钥的安全保护责任);
* a mechanism the token lacks is refused clearly, never replaced by a weaker one (SM4 on SoftHSM, for instance).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from typing import Any, ClassVar

try:
    from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
    from pkcs11 import exceptions as p11e
    from pkcs11.constants import DEFAULT as _P11_DEFAULT
    from pkcs11.util.rsa import decode_rsa_public_key, encode_rsa_public_key
except ImportError:  # pragma: no cover - pkcs11/session.py reports the missing library (HAS_PKCS11)
    pass

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import today as network_today
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import HsmError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import (
    KEK_ALGORITHM,
    KEK_TYPE,
    parse_key_label,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.algorithms import (
    ALGORITHMS,
    AlgorithmSpec,
    check_kcv,
    diversification_data,
    pboc_derivation_data,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.params import key_derivation_string_data
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.policy import KeyPolicy
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.session import (
    find_token,
    hsm_error,
    open_session,
    pkcs11_errors,
)


def _object_class(value: Any) -> Any:
    """An ObjectClass, also from its name ("secret_key", "public_key", "private_key"): flows need no pkcs11 import."""
    return ObjectClass[value.upper()] if isinstance(value, str) else value


# SM4: there is no CKK_/CKM_ constant in PKCS#11 up to 3.1; vendors use CKM_VENDOR_DEFINED values, which differ by
# vendor. None is known to this project yet, so SM4 is always refused with a clear message (never a fallback).
SM4_VENDOR_MECHANISMS: tuple[int, ...] = ()


_RFC3394_IV = bytes.fromhex("A6A6A6A6A6A6A6A6")


_ATTR_REPORT = (
    "token",
    "private",
    "sensitive",
    "extractable",
    "always_sensitive",
    "never_extractable",
    "wrap_with_trusted",
    "trusted",
    "modifiable",
    "local",
    "encrypt",
    "decrypt",
    "sign",
    "verify",
    "wrap",
    "unwrap",
    "derive",
)


def _wipe(buf: bytearray | None) -> None:
    if buf is not None:
        for i in range(len(buf)):
            buf[i] = 0


class HsmToken:
    """One logged-in session on one token. Obtain it from :func:`hsm_session`."""

    def __init__(self, session: Any, token: Any, library: str) -> None:
        self.session = session
        self.token = token
        self.library = library
        self.label: str = token.label
        self._mechs: set[int] | None = None
        self._validity: dict[int, tuple[_dt.date | None, _dt.date | None, str]] = {}
        #: label -> (not_before, not_after); set it from the catalogue (catalogue.Catalogue.validity_for).
        self.validity_lookup: Callable[[str], tuple[_dt.date | None, _dt.date | None]] | None = None

    # ---------------------------------------------------------------- mechanisms
    @property
    def mechanisms(self) -> set[int]:
        if self._mechs is None:
            with pkcs11_errors("listing mechanisms"):
                self._mechs = {int(m) for m in self.token.slot.get_mechanisms()}
        return self._mechs

    def has_mechanism(self, mechanism: Any) -> bool:
        return int(mechanism) in self.mechanisms

    def require_mechanism(self, mechanism: Any, purpose: str) -> None:
        if not self.has_mechanism(mechanism):
            name = getattr(mechanism, "name", f"0x{int(mechanism):08X}")
            raise HsmError(f"token {self.label!r} does not offer CKM_{name}, needed for {purpose}; refusing")

    def require_algorithm(self, algorithm: str, purpose: str = "this key") -> AlgorithmSpec:
        """Check that the token can hold keys of ``algorithm``. SM4 without vendor support is refused."""
        spec = ALGORITHMS.get(algorithm)
        if spec is None:
            raise HsmError(f"unknown algorithm {algorithm!r}; expected one of {', '.join(ALGORITHMS)}")
        if spec.family == "sm4":
            if not SM4_VENDOR_MECHANISMS or not any(m in self.mechanisms for m in SM4_VENDOR_MECHANISMS):
                raise HsmError(
                    f"token {self.label!r} offers no SM4 mechanism, needed for {purpose}; "
                    "refusing (no fallback to 3DES or AES)"
                )
            raise HsmError(f"token {self.label!r} offers a vendor SM4 mechanism, but this project has no SM4 support")
        if spec.family == "des3":
            self.require_mechanism(Mechanism.DES3_ECB, purpose)
        else:
            self.require_mechanism(Mechanism.AES_ECB, purpose)
        return spec

    # ---------------------------------------------------------------- lookup
    def find_key(self, label: str | None = None, id: bytes | None = None, object_class: Any = None) -> Any | None:
        """The one object with this label and/or ID, or None. Two matches are an error."""
        attrs: dict[Any, Any] = {Attribute.CLASS: _object_class(object_class) or ObjectClass.SECRET_KEY}
        if label is not None:
            attrs[Attribute.LABEL] = label
        if id is not None:
            attrs[Attribute.ID] = id
        with pkcs11_errors(f"searching for {label or id!r}"):
            found = list(self.session.get_objects(attrs))
        if len(found) > 1:
            raise HsmError(f"{len(found)} objects match {label or id!r} in token {self.label!r}; labels must be unique")
        return found[0] if found else None

    def get_key(self, label: str, object_class: Any = None, *, check_validity: bool = True) -> Any:
        """The key labelled ``label``; missing keys and keys outside their validity period are errors."""
        key = self.find_key(label=label, object_class=object_class)
        if key is None:
            raise HsmError(f"no key labelled {label!r} in token {self.label!r}")
        if check_validity:
            self.check_validity(key)
        return key

    def list_keys(self, object_class: Any = None) -> list[Any]:
        """The token's key objects (secret, public and private keys), or those of one class. Data objects (the
        highest accepted blacklist version) are not keys: python-pkcs11 gives them no label or key attributes."""
        classes = [object_class] if object_class is not None else ["secret_key", "public_key", "private_key"]
        objs: list[Any] = []
        with pkcs11_errors("listing objects"):
            for cls in classes:
                objs += self.session.get_objects({Attribute.CLASS: _object_class(cls)})
        return objs

    # ---------------------------------------------------------------- validity
    def _read_date(self, key: Any, attr: Any) -> _dt.date | None:
        try:
            return key[attr]
        except ValueError:  # python-pkcs11 cannot parse an empty CK_DATE: no date set
            return None
        except p11e.GeneralError:  # SoftHSM 2.6.1 cannot return the dates of private objects
            raise
        except p11e.PKCS11Error:
            return None

    def check_validity(self, key: Any, today: _dt.date | None = None) -> None:
        """Refuse a key outside [CKA_START_DATE, CKA_END_DATE]. Cached per handle for the session.

        SoftHSM 2.6.1 stores the dates of private objects but answers CKR_GENERAL_ERROR when they are read back, and
        keys made before dates were set carry none: the period of :attr:`validity_lookup` (the catalogue, keyed by
        label), if one is set, applies as well (the narrower of the two).
        """
        cached = self._validity.get(key.handle)
        if cached is None:
            with pkcs11_errors("reading the key label"):
                label = key[Attribute.LABEL]
            try:
                start, end = self._read_date(key, Attribute.START_DATE), self._read_date(key, Attribute.END_DATE)
            except p11e.GeneralError:
                start = end = None
            if self.validity_lookup is not None:  # the catalogue's period too: a key without dates is not timeless
                cat_start, cat_end = self.validity_lookup(label)
                start = max(d for d in (start, cat_start) if d) if start or cat_start else None
                end = min(d for d in (end, cat_end) if d) if end or cat_end else None
            cached = (start, end, label)
            self._validity[key.handle] = cached
        start, end, label = cached
        today = today or network_today()
        if start and today < start:
            raise HsmError(f"key {label!r} is not valid before {start.isoformat()}; refusing to use it")
        if end and today > end:
            raise HsmError(f"key {label!r} expired on {end.isoformat()}; refusing to use it")

    # ---------------------------------------------------------------- key creation
    def _id_label(self, label: str | None, id: bytes | None) -> dict[Any, Any]:
        tpl: dict[Any, Any] = {}
        if label is not None:
            tpl[Attribute.LABEL] = label
        if id is not None:
            tpl[Attribute.ID] = id
        return tpl

    def generate_secret(self, algorithm: str, label: str | None, id: bytes | None, policy: KeyPolicy) -> Any:
        spec = self.require_algorithm(algorithm, f"generating {label}")
        tpl = policy.template() | self._id_label(label, id)
        if spec.family == "des3":
            self.require_mechanism(Mechanism.DES2_KEY_GEN, f"generating {label}")
            with pkcs11_errors(f"generating {label}"):
                return self.session.generate_key(
                    KeyType.DES2, None, mechanism=Mechanism.DES2_KEY_GEN, template=tpl, store=policy.token
                )
        self.require_mechanism(Mechanism.AES_KEY_GEN, f"generating {label}")
        with pkcs11_errors(f"generating {label}"):
            return self.session.generate_key(KeyType.AES, spec.length * 8, template=tpl, store=policy.token)

    def generate_rsa_keypair(
        self, bits: int, label: str, id: bytes | None = None, *, token: bool = True, trusted_public: bool = False
    ) -> tuple[Any, Any]:
        """RSA pair for receiving keys (RSA-OAEP unwrap): the private key never leaves the token."""
        self.require_mechanism(Mechanism.RSA_PKCS_KEY_PAIR_GEN, f"generating {label}")
        pub_tpl = {Attribute.WRAP: True, Attribute.ENCRYPT: True, Attribute.VERIFY: False, Attribute.TOKEN: token}
        if trusted_public:
            pub_tpl[Attribute.TRUSTED] = True
        priv_tpl = {
            Attribute.UNWRAP: True,
            Attribute.DECRYPT: False,
            Attribute.SIGN: False,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.TOKEN: token,
            Attribute.PRIVATE: True,
        }
        with pkcs11_errors(f"generating RSA pair {label}"):
            return self.session.generate_keypair(
                KeyType.RSA,
                bits,
                id=id,
                label=label,
                store=token,
                public_template=pub_tpl,
                private_template=priv_tpl,
            )

    def public_key_der(self, public_key: Any) -> bytes:
        """The SubjectPublicKeyInfo-free PKCS#1 DER of an RSA public key (public data, safe to publish)."""
        with pkcs11_errors("exporting a public key"):
            return bytes(encode_rsa_public_key(public_key))

    def import_rsa_public_key(self, der: bytes, label: str, id: bytes | None = None, *, trusted: bool = False) -> Any:
        """Import a PKCS#1 DER RSA public key; ``trusted`` needs an SO session (CKA_TRUSTED)."""
        tpl = (
            decode_rsa_public_key(der)
            | {
                Attribute.TOKEN: True,
                Attribute.PRIVATE: False,
                Attribute.WRAP: True,
                Attribute.ENCRYPT: False,
                Attribute.VERIFY: False,
            }
            | self._id_label(label, id)
        )
        if trusted:
            tpl[Attribute.TRUSTED] = True
        with pkcs11_errors(f"importing public key {label}"):
            return self.session.create_object(tpl)

    def destroy(self, obj: Any) -> None:
        with pkcs11_errors("destroying an object"):
            obj.destroy()

    def ensure_id(self, obj: Any, id: bytes, *, check_mode: bool = False) -> bool:
        """Give an object the ``CKA_ID`` of the label scheme in place (objects made before IDs were set): no copy,
        label and value unchanged. True when it changes (or would, in check mode). A token that refuses is an error
        naming the object and the way out, never a silent skip."""
        with pkcs11_errors("reading an object's label and CKA_ID"):
            label = obj[Attribute.LABEL]
            have = bytes(obj[Attribute.ID] or b"")
        if have == id:
            return False
        try:
            modifiable = bool(obj[Attribute.MODIFIABLE])
        except p11e.PKCS11Error:
            modifiable = True  # a token that cannot say: setting the ID answers
        lacking = f"token {self.label!r} holds {label!r} without the CKA_ID {id.hex()} of the label scheme"
        remedy = (
            "re-create the object (a city's granted key: destroy it and the next distribution pass installs it "
            "again; a KEK: raise the city's KEK version; a transport pair: re-enrol the city)"
        )
        if not modifiable:
            raise HsmError(f"{lacking}, and marks it CKA_MODIFIABLE false, so its ID cannot be set in place: {remedy}")
        if check_mode:
            return True
        try:
            obj[Attribute.ID] = id
        except p11e.PKCS11Error as exc:
            raise HsmError(f"{lacking}; the token refused to set it (PKCS#11 {type(exc).__name__}): {remedy}") from None
        return True

    # ---------------------------------------------------------------- derivation
    def derive_ecb(
        self,
        base: Any,
        data: bytes,
        *,
        algorithm: str = "3DES-2KEY",
        label: str | None = None,
        id: bytes | None = None,
        policy: KeyPolicy | None = None,
        check_validity: bool = True,
    ) -> Any:
        """Derive a key whose value is ECB(base, data), inside the HSM.

        3DES base: ``CKM_DES3_ECB_ENCRYPT_DATA`` (parameter packed by pkcs11_derive); AES base:
        ``CKM_AES_ECB_ENCRYPT_DATA``. ``policy`` defaults to a transient session key (CKA_TOKEN false) usable for
        encryption and MACs, which is what cryptogram and session-key callers want.
        """
        if check_validity:
            self.check_validity(base)
        policy = policy or KeyPolicy(usage="cryptogram", token=False, extractable=False)
        spec = ALGORITHMS[algorithm]
        if len(data) != spec.length:
            raise HsmError(f"derivation data for {algorithm} must be {spec.length} bytes, got {len(data)}")
        tpl = policy.template(fixed=False) | self._id_label(label, id) | {Attribute.VALUE_LEN: _P11_DEFAULT}
        base_type = base.key_type
        what = f"deriving {label or 'a session key'}"
        if base_type in (KeyType.DES2, KeyType.DES3):
            self.require_mechanism(Mechanism.DES3_ECB_ENCRYPT_DATA, what)
            if spec.family != "des3":
                tpl[Attribute.VALUE_LEN] = spec.length
            kt = KeyType.DES2 if spec.family == "des3" else KeyType.AES
            with key_derivation_string_data(data) as param, pkcs11_errors(what):
                return base.derive_key(
                    kt,
                    spec.length * 8,
                    mechanism=Mechanism.DES3_ECB_ENCRYPT_DATA,
                    mechanism_param=param,
                    template=tpl,
                    store=policy.token,
                )
        if base_type == KeyType.AES:
            self.require_mechanism(Mechanism.AES_ECB_ENCRYPT_DATA, what)
            kt = KeyType.DES2 if spec.family == "des3" else KeyType.AES
            tpl[Attribute.VALUE_LEN] = spec.length
            with pkcs11_errors(what):
                return base.derive_key(
                    kt,
                    spec.length * 8,
                    mechanism=Mechanism.AES_ECB_ENCRYPT_DATA,
                    mechanism_param=bytes(data),
                    template=tpl,
                    store=policy.token,
                )
        raise HsmError(f"{what}: base key type {base_type!r} cannot derive")

    def derive_pboc(
        self,
        master: Any,
        diversifier: str | bytes,
        *,
        algorithm: str | None = None,
        label: str | None = None,
        id: bytes | None = None,
        policy: KeyPolicy | None = None,
    ) -> Any:
        """PBOC diversification inside the HSM: ``DK = 3DES(MK, D) || 3DES(MK, ~D)``.

        AES master keys (project convention, docs/hsm.md): AES-128 ``DK = AES(MK, D || ~D)``; AES-256
        ``DK = AES(MK, D || ~D || ~D || D)``. ``diversifier`` is a city code, SAM serial or card number.
        """
        d = diversification_data(diversifier)
        dd = pboc_derivation_data(d)
        if master.key_type == KeyType.AES:
            length = master.key_length // 8
            data = dd if length == 16 else dd + dd[8:] + dd[:8]
            algorithm = algorithm or ("AES-128" if length == 16 else "AES-256")
        else:
            data = dd
            algorithm = algorithm or "3DES-2KEY"
        return self.derive_ecb(master, data, algorithm=algorithm, label=label, id=id, policy=policy)

    # ---------------------------------------------------------------- cryptography with handles
    def encrypt(self, key: Any, data: bytes, *, mode: str = "ecb", iv: bytes | None = None) -> bytes:
        """ECB or CBC encryption inside the HSM (data must be whole blocks; no padding is added)."""
        if key.key_type in (KeyType.DES2, KeyType.DES3):
            mech = Mechanism.DES3_ECB if mode == "ecb" else Mechanism.DES3_CBC
            block = 8
        else:
            mech = Mechanism.AES_ECB if mode == "ecb" else Mechanism.AES_CBC
            block = 16
        if len(data) % block:
            raise HsmError(f"data to encrypt must be whole {block}-byte blocks")
        param = None if mode == "ecb" else bytes(iv if iv is not None else bytes(block))
        with pkcs11_errors(f"{mode.upper()} encryption"):
            return bytes(key.encrypt(bytes(data), mechanism=mech, mechanism_param=param))

    def cmac(self, key: Any, data: bytes, length: int | None = None) -> bytes:
        mech = Mechanism.AES_CMAC if key.key_type == KeyType.AES else Mechanism.DES3_CMAC
        with pkcs11_errors("CMAC"):
            mac = bytes(key.sign(bytes(data), mechanism=mech))
        return mac[:length] if length else mac

    # ---------------------------------------------------------------- KCV
    def kcv(self, key: Any, method: str = "ecb", length: int = 3) -> bytes:
        """Key check value, computed inside the HSM.

        * ``ecb`` (3DES and AES): first bytes of ECB encryption of one zero block (8 bytes 3DES, 16 bytes AES);
        * ``cmac`` (AES, X9.24-1:2017 style): first bytes of AES-CMAC over one zero block.

        Computed by encryption (or CMAC) inside the HSM: directly when the key allows it, otherwise on a transient
        session copy that does (C_CopyObject), destroyed at once. CKA_CHECK_VALUE is only the last resort, for
        tokens that refuse such a copy: SoftHSM 2.6.1 sets a *wrong* CKA_CHECK_VALUE on keys made by C_DeriveKey
        (docs/hsm.md), so it is never preferred.
        """
        if method not in ("ecb", "cmac"):
            raise HsmError(f"unknown KCV method {method!r}; expected 'ecb' or 'cmac'")
        kt = key.key_type
        block = 8 if kt in (KeyType.DES2, KeyType.DES3) else 16
        cap = Attribute.ENCRYPT if method == "ecb" else Attribute.SIGN
        with pkcs11_errors("reading key capabilities"):
            allowed = bool(key[cap])
        tmp = None
        try:
            if not allowed:
                try:
                    tmp = key.copy({Attribute.TOKEN: False, cap: True})
                except p11e.PKCS11Error as exc:
                    cv = b""
                    if method == "ecb" and length <= 3:
                        with suppress(p11e.PKCS11Error):
                            cv = bytes(key[Attribute.CHECK_VALUE] or b"")
                    if len(cv) >= length:
                        return cv[:length]
                    raise hsm_error("making a transient copy to compute the KCV", exc) from None
            k = tmp or key
            out = self.encrypt(k, bytes(block)) if method == "ecb" else self.cmac(k, bytes(block))
            return out[:length]
        finally:
            if tmp is not None:
                tmp.destroy()

    # ---------------------------------------------------------------- wrap / unwrap
    _WRAP_MECHS: ClassVar[dict[str, str]] = {
        "aes-key-wrap-pad": "AES_KEY_WRAP_PAD",
        "aes-key-wrap": "AES_KEY_WRAP",
        "rsa-oaep": "RSA_PKCS_OAEP",
        "des3-cbc": "DES3_CBC",
    }

    def _wrap_mech(self, name: str) -> Any:
        if name not in self._WRAP_MECHS:
            raise HsmError(f"unknown wrapping mechanism {name!r}; expected one of {', '.join(self._WRAP_MECHS)}")
        return getattr(Mechanism, self._WRAP_MECHS[name])

    def wrap(self, kek: Any, key: Any, mechanism: str = "aes-key-wrap-pad", iv: bytes | None = None) -> bytes:
        """Wrap ``key`` under ``kek`` inside the HSM. Keys made by this module wrap only under trusted KEKs."""
        mech = self._wrap_mech(mechanism)
        self.require_mechanism(mech, "wrapping a key")
        self.check_validity(key)
        param = bytes(iv) if iv is not None else None
        with pkcs11_errors(f"wrapping {key.label!r} under {kek.label!r}"):
            return bytes(kek.wrap_key(key, mechanism=mech, mechanism_param=param))

    def unwrap(
        self,
        kek: Any,
        blob: bytes,
        algorithm: str,
        *,
        label: str | None,
        id: bytes | None,
        policy: KeyPolicy,
        mechanism: str = "aes-key-wrap-pad",
        iv: bytes | None = None,
    ) -> Any:
        spec = self.require_algorithm(algorithm, f"unwrapping {label}")
        mech = self._wrap_mech(mechanism)
        self.require_mechanism(mech, f"unwrapping {label}")
        self.check_validity(kek)
        kt = KeyType.DES2 if spec.family == "des3" else KeyType.AES
        tpl = policy.template(fixed=False) | self._id_label(label, id)
        with pkcs11_errors(f"unwrapping {label or 'a key'} under {kek.label!r}"):
            return kek.unwrap_key(
                ObjectClass.SECRET_KEY,
                kt,
                bytes(blob),
                mechanism=mech,
                mechanism_param=bytes(iv) if iv is not None else None,
                store=policy.token,
                template=tpl,
            )

    # ---------------------------------------------------------------- split knowledge
    def component_kcv(self, algorithm: str, component: bytes | bytearray, method: str = "ecb") -> bytes:
        """KCV of one clear component, computed in the HSM on a transient session object."""
        spec = self.require_algorithm(algorithm, "checking a key component")
        if len(component) != spec.length:
            raise HsmError(f"a {algorithm} component must be {spec.length} bytes, got {len(component)}")
        kt = KeyType.DES2 if spec.family == "des3" else KeyType.AES
        with pkcs11_errors("loading a component for its KCV"):
            obj = self.session.create_object(
                {
                    Attribute.CLASS: ObjectClass.SECRET_KEY,
                    Attribute.KEY_TYPE: kt,
                    Attribute.VALUE: bytes(component),
                    Attribute.TOKEN: False,
                    Attribute.PRIVATE: False,  # transient; public so an SO session (trusted KEKs) can make it too
                    Attribute.SENSITIVE: True,
                    Attribute.EXTRACTABLE: False,
                    Attribute.ENCRYPT: method == "ecb",
                    Attribute.SIGN: method == "cmac",
                }
            )
        try:
            return self.kcv(obj, method)
        finally:
            obj.destroy()

    def import_components(  # noqa: PLR0912 - each check is one refusal with its own message
        self,
        algorithm: str,
        components: Sequence[bytearray],
        component_kcvs: Sequence[bytes | None],
        *,
        expected_kcv: bytes | None,
        label: str,
        id: bytes | None,
        policy: KeyPolicy,
        kcv_method: str = "ecb",
        check_mode: bool = False,
    ) -> tuple[Any | None, bytes]:
        """Form a key from 2 or 3 clear components (XOR) inside the HSM; returns (key, KCV).

        Each component is checked against its own KCV first, then the combined key against ``expected_kcv``
        (on a transient session copy) before anything is stored: a mismatch leaves the token unchanged.

        SoftHSM has no ``CKM_XOR_BASE_AND_DATA``. The XOR is done by the HSM while it computes an RFC 3394 key
        wrap of the combined key under an ephemeral AES-256 session KEK: the first wrap round's AES inputs are
        ``A | (c1 ^ m)``, computed as ``CBC(KEK, iv = 0^64 | m, A | c1)`` with ``m`` the XOR of the other
        components, and every later round only encrypts ciphertext. The result is unwrapped with
        ``CKM_AES_KEY_WRAP`` into the final key; the KEK is destroyed. The combined clear value never exists in
        this process. Callers pass components as ``bytearray``; they are zeroed here, whatever the outcome.
        """
        try:
            spec = self.require_algorithm(algorithm, f"importing {label} from components")
            if not 2 <= len(components) <= 3:
                raise HsmError(f"{label}: 2 or 3 components are required, got {len(components)}")
            if len(component_kcvs) != len(components):
                raise HsmError(f"{label}: give one KCV per component ({len(components)} components)")
            for i, comp in enumerate(components, 1):
                if len(comp) != spec.length:
                    raise HsmError(f"{label}: component {i} must be {spec.length} bytes, got {len(comp)}")
                got = self.component_kcv(algorithm, comp, kcv_method)
                want = component_kcvs[i - 1]
                if want is None:
                    raise HsmError(f"{label}: component {i} has no KCV; every custodian must give one")
                check_kcv(
                    f"{label}: component {i} of {len(components)} does not match its KCV (nothing stored)",
                    got,
                    bytes(want),
                )
            for mech in (Mechanism.AES_KEY_GEN, Mechanism.AES_CBC, Mechanism.AES_ECB, Mechanism.AES_KEY_WRAP):
                self.require_mechanism(mech, f"combining the components of {label}")
            kt = KeyType.DES2 if spec.family == "des3" else KeyType.AES
            with pkcs11_errors("generating the ephemeral combination KEK"):
                kek = self.session.generate_key(
                    KeyType.AES,
                    256,
                    store=False,
                    template={
                        Attribute.TOKEN: False,
                        Attribute.PRIVATE: False,
                        Attribute.SENSITIVE: True,
                        Attribute.EXTRACTABLE: False,
                        Attribute.ENCRYPT: True,
                        Attribute.DECRYPT: False,
                        Attribute.UNWRAP: True,
                        Attribute.WRAP: False,
                        Attribute.DERIVE: False,
                        Attribute.SIGN: False,
                    },
                )
            try:
                blob = self._wrap_xor(kek, components)
                cap = Attribute.ENCRYPT if kcv_method == "ecb" else Attribute.SIGN
                with pkcs11_errors(f"checking the combined key of {label}"):
                    probe = kek.unwrap_key(
                        ObjectClass.SECRET_KEY,
                        kt,
                        blob,
                        mechanism=Mechanism.AES_KEY_WRAP,
                        store=False,
                        template={
                            Attribute.TOKEN: False,
                            Attribute.PRIVATE: False,
                            Attribute.SENSITIVE: True,
                            Attribute.EXTRACTABLE: False,
                            cap: True,
                        },
                    )
                try:
                    kcv = self.kcv(probe, kcv_method)
                finally:
                    probe.destroy()
                if expected_kcv is not None:
                    check_kcv(f"{label}: the combined key (nothing was stored)", kcv, bytes(expected_kcv))
                if check_mode:
                    return None, kcv
                tpl = policy.template(fixed=False) | self._id_label(label, id)
                with pkcs11_errors(f"storing {label}"):
                    key = kek.unwrap_key(
                        ObjectClass.SECRET_KEY,
                        kt,
                        blob,
                        mechanism=Mechanism.AES_KEY_WRAP,
                        store=policy.token,
                        template=tpl,
                    )
                return key, kcv
            finally:
                kek.destroy()
        finally:
            for comp in components:
                if isinstance(comp, bytearray):
                    _wipe(comp)

    def _wrap_xor(self, kek: Any, components: Sequence[bytes | bytearray]) -> bytes:
        """RFC 3394 wrap of XOR(components) under ``kek`` with the XOR done by the HSM (see import_components)."""
        first = components[0]
        n = len(first) // 8
        mask = bytearray(len(first))
        try:
            for comp in components[1:]:
                for i, byte in enumerate(comp):
                    mask[i] ^= byte
            a = _RFC3394_IV
            r: list[bytes] = [b""] * n
            for j in range(6):
                for i in range(n):
                    if j == 0:
                        iv = bytes(8) + bytes(mask[8 * i : 8 * i + 8])
                        with pkcs11_errors("combining components"):
                            b = bytes(
                                kek.encrypt(
                                    a + bytes(first[8 * i : 8 * i + 8]), mechanism=Mechanism.AES_CBC, mechanism_param=iv
                                )
                            )
                    else:
                        with pkcs11_errors("combining components"):
                            b = bytes(kek.encrypt(a + r[i], mechanism=Mechanism.AES_ECB))
                    t = n * j + i + 1
                    a = (int.from_bytes(b[:8], "big") ^ t).to_bytes(8, "big")
                    r[i] = b[8:]
            return a + b"".join(r)
        finally:
            _wipe(mask)

    # ---------------------------------------------------------------- reporting
    def describe(self, obj: Any, *, kcv_method: str = "ecb", with_kcv: bool = True) -> dict[str, Any]:
        """Label, ID, class, type, version, algorithm, KCV and attributes of an object. Never its value."""
        with pkcs11_errors("reading object attributes"):
            cls = obj[Attribute.CLASS]
        info: dict[str, Any] = {"object_class": ObjectClass(cls).name.lower()}
        wanted = [Attribute.LABEL, Attribute.ID, Attribute.KEY_TYPE]
        wanted += [getattr(Attribute, a.upper()) for a in _ATTR_REPORT]
        attrs: dict[Any, Any] = {}
        for a in wanted:
            try:
                attrs[a] = obj[a]
            except p11e.PKCS11Error:
                continue
        label = attrs.get(Attribute.LABEL) or ""
        info["label"] = label
        info["id"] = bytes(attrs.get(Attribute.ID) or b"").hex()
        kt = attrs.get(Attribute.KEY_TYPE)
        info["key_type"] = KeyType(kt).name if kt is not None else None
        name = parse_key_label(label)
        info.update(
            key_class=name.key_class if name else None,
            type=name.key_type if name else None,
            version=name.version if name else None,
            holder=name.holder if name else None,
        )
        length = None
        if cls == ObjectClass.SECRET_KEY:
            try:
                length = (
                    obj.key_length // 8
                    if kt == KeyType.AES
                    else {KeyType.DES2: 16, KeyType.DES3: 24}.get(kt)
                    if kt is not None
                    else None
                )
            except p11e.PKCS11Error:
                length = None
        info["algorithm"] = _algorithm_name(kt, length)
        if kt == KeyType.AES and not length and name is not None and name.key_type == KEK_TYPE:
            info["algorithm"] = KEK_ALGORITHM  # CKA_VALUE_LEN reads 0 after an RSA-OAEP unwrap (SoftHSM 2.6)
        try:
            start, end = self._read_date(obj, Attribute.START_DATE), self._read_date(obj, Attribute.END_DATE)
            info["validity_source"] = "token"
        except p11e.GeneralError:
            start, end = self.validity_lookup(label) if self.validity_lookup else (None, None)
            info["validity_source"] = "catalogue" if self.validity_lookup else "unknown"
        info["not_before"] = start.isoformat() if start else None
        info["not_after"] = end.isoformat() if end else None
        info["attributes"] = {
            a: bool(attrs[getattr(Attribute, a.upper())])
            for a in _ATTR_REPORT
            if getattr(Attribute, a.upper()) in attrs
        }
        info["kcv"] = None
        info["kcv_method"] = None
        if with_kcv and cls == ObjectClass.SECRET_KEY and kt in (KeyType.DES2, KeyType.DES3, KeyType.AES):
            method = kcv_method if kt == KeyType.AES else "ecb"
            try:
                info["kcv"] = self.kcv(obj, method).hex().upper()
                info["kcv_method"] = method
            except HsmError as exc:
                info["kcv_error"] = str(exc)
        return info


def _algorithm_name(kt: Any, length: int | None) -> str | None:
    if kt is None:
        return None
    if kt == KeyType.DES2:
        return "3DES-2KEY"
    if kt == KeyType.DES3:
        return "3DES-3KEY"
    if kt == KeyType.AES and length:
        return f"AES-{length * 8}"
    return KeyType(kt).name


@contextmanager
def hsm_session(
    library: str,
    token_label: str,
    user_pin: str | None,
    rw: bool = True,
    *,
    so_pin: str | None = None,
) -> Iterator[HsmToken]:
    """Open one session on the token labelled ``token_label`` and log in once (user, or SO when ``so_pin``).

    Yields an :class:`HsmToken`. Session objects created through it disappear when the block ends.
    """
    token = find_token(library, token_label)
    if token is None:
        raise HsmError(f"no token labelled {token_label!r} in {library}; provision it (playbooks/provision_hsm.yml)")
    session = open_session(token, rw, user_pin, so_pin)
    try:
        yield HsmToken(session, token, library)
    finally:
        with suppress(p11e.PKCS11Error):
            session.close()


def session_from_params(params: Mapping[str, Any], *, rw: bool = True, so: bool = False) -> Any:
    """:func:`hsm_session` from the ``tunion.keymgmt.pkcs11`` options: the user, or the SO when ``so``."""
    if so:
        return hsm_session(params["pkcs11_library"], params["token_label"], None, rw, so_pin=params["so_pin"])
    return hsm_session(params["pkcs11_library"], params["token_label"], params["user_pin"], rw)
