# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The names of the collection: key classes, the label and ID scheme, version names and holders (docs/hsm.md).

Label: ``<class>.<type>.v<VV>.<holder>``, e.g. ``consumption.purchase.v01.province`` or
``recharge.load.v02.city-440100``; ``CKA_ID = class || type code || version || holder id``. A key version is named
``<type>.v<VV>`` (statuses, key block names, reports). Holders: ``province``, ``city-<code>``, ``sam-<serial>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import DistributionError, HsmError

#: a city's code (行政区划代码, six digits) and a SAM serial (ten bytes, hex)
CITY_CODE_RE = re.compile(r"^[0-9]{6}\Z")
SAM_SERIAL_RE = re.compile(r"^[0-9A-F]{20}\Z")
#: the KEK type of the label scheme (internal.kek.vVV.<holder>) and its one algorithm: the province makes each city's
#: KEK as AES-256, and SoftHSM cannot say a KEK's length once it has been unwrapped (CKA_VALUE_LEN reads 0)
KEK_TYPE = "kek"
KEK_ALGORITHM = "AES-256"
#: the type of a city's RSA transport pair (internal.transport_rsa.v01.<holder>), and of the province's copy of its
#: public key
RSA_TYPE = "transport_rsa"
#: type codes of the collection's own internal objects, which no catalogue entry describes: their CKA_ID takes the
#: code from here. Internal codes 0xF0..0xFF are the collection's, and the catalogue refuses them and these names.
RESERVED_TYPE_CODES: dict[str, int] = {KEK_TYPE: 0xF1, RSA_TYPE: 0xF2}
RESERVED_CODE_RANGE = range(0xF0, 0x100)
#: a city's name (the inventory host): it names OpenBao paths, the city's policy and AppRole, so nothing else
CITY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}\Z")
VERSION_NAME_RE = re.compile(r"^(?P<type>[a-z][a-z0-9_]*)\.v(?P<ver>[0-9a-f]{2})\Z")

#: key classes and their CKA_ID class byte. 消费类 / 充值类 (第二条(三)), plus internal keys (KEKs, SAM issuer keys).
KEY_CLASSES: dict[str, int] = {"consumption": 0x01, "recharge": 0x02, "internal": 0x03}


_TYPE_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}\Z")


_HOLDER_RE = re.compile(r"^(province|city-[0-9]{6}|sam-[0-9a-f]{2,32}|[a-z][a-z0-9-]{0,30})\Z")


_LABEL_RE = re.compile(r"^(?P<cls>[a-z]+)\.(?P<type>[a-z][a-z0-9_]*)\.v(?P<ver>[0-9a-f]{2})\.(?P<holder>[a-z0-9-]+)\Z")


@dataclass(frozen=True)
class KeyName:
    """The parts a project key label is made of."""

    key_class: str
    key_type: str
    version: int
    holder: str = "province"

    @property
    def label(self) -> str:
        return key_label(self.key_class, self.key_type, self.version, self.holder)


def _check_name(key_class: str, key_type: str, version: int, holder: str) -> None:
    if key_class not in KEY_CLASSES:
        raise HsmError(f"unknown key class {key_class!r}; expected one of {', '.join(KEY_CLASSES)}")
    if not _TYPE_RE.match(key_type):
        raise HsmError(f"key type name {key_type!r} must be lower-case letters, digits and _ (max 31)")
    if not isinstance(version, int) or not 0 <= version <= 0xFF:
        raise HsmError(f"key version {version!r} must be one byte (0..255), as on PBOC cards")
    if not _HOLDER_RE.match(holder):
        raise HsmError(f"holder {holder!r} must be 'province', 'city-<6-digit city code>' or 'sam-<hex serial>'")


def key_label(key_class: str, key_type: str, version: int, holder: str = "province") -> str:
    """``consumption.purchase.v01.province``: class, type, version (hex byte) and holder."""
    _check_name(key_class, key_type, version, holder)
    return f"{key_class}.{version_name(key_type, version)}.{holder}"


def parse_key_label(label: str) -> KeyName | None:
    """The parts of a project label, or None for labels outside the scheme (foreign objects)."""
    m = _LABEL_RE.match(label or "")
    if not m or m["cls"] not in KEY_CLASSES:
        return None
    return KeyName(m["cls"], m["type"], int(m["ver"], 16), m["holder"])


def _holder_id(holder: str) -> bytes:
    if holder == "province":
        return b"\x00"
    if holder.startswith("city-"):
        return b"\x01" + bytes.fromhex(holder[5:])
    if holder.startswith("sam-"):
        serial = holder[4:]
        return b"\x02" + bytes.fromhex(serial if len(serial) % 2 == 0 else "0" + serial)
    return b"\x03" + holder.encode()


def key_id(key_class: str, type_code: int, version: int, holder: str = "province") -> bytes:
    """``CKA_ID``: class byte, type code (catalogue ``code``), version byte, then the holder id.

    Holder id: ``00`` province; ``01`` + city code in BCD (``city-440100`` -> ``01 44 01 00``); ``02`` + SAM serial.
    """
    _check_name(key_class, "x", version, holder)
    if not 0 < int(type_code) <= 0xFF:
        raise HsmError(f"key type code {type_code!r} must be one byte (1..255)")
    return bytes([KEY_CLASSES[key_class], int(type_code), version]) + _holder_id(holder)


def reserved_key_id(key_type: str, version: int, holder: str) -> bytes:
    """``CKA_ID`` of a KEK or RSA transport key (class internal, type code from RESERVED_TYPE_CODES)."""
    return key_id("internal", RESERVED_TYPE_CODES[key_type], version, holder)


def version_name(key_type: str, version: int) -> str:
    """'<type>.v<VV>': the name of a key version in statuses, block names and reports."""
    return f"{key_type}.v{int(version):02x}"


def parse_version_name(name: str) -> tuple[str, int] | None:
    """``purchase.v01`` -> ("purchase", 1); None for anything else."""
    m = VERSION_NAME_RE.match(str(name))
    return (m["type"], int(m["ver"], 16)) if m else None


def city_holder(city_code: str) -> str:
    """The holder name of a city's keys: ``city-<code>``."""
    return f"city-{city_code}"


def check_cities(names: Iterable[Any]) -> None:
    """City names as the distribution modules take them; refused by name before anything is reached."""
    bad = [str(n) for n in names if not isinstance(n, str) or not CITY_NAME_RE.match(n)]
    if bad:
        raise DistributionError(
            f"city name(s) {', '.join(map(repr, bad))}: a city name is letters, digits, '.', '_' or '-' (it names the "
            "city's OpenBao paths, policy and AppRole); nothing was changed"
        )
