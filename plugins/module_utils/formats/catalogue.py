# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The key catalogue: desired key types and versions, and the rules they must obey before any token is touched.

Rules enforced (粤交〔2019〕11号):

* 第二条(三): keys are consumption-class (消费类) or recharge-class (充值类); the project adds ``internal`` for
  transport keys (KEKs) and SAM issuer keys, which never leave the HSMs either.
* 第二条(四): HSMs (专用加密机) hold every class; SAMs (专用安全存取模块) hold consumption keys only. A recharge (or
  internal) key with ``sam`` among its holders is refused.
* 第四条/第九条: consumption keys are applied for from the Ministry (origin ``ministry``); recharge keys are issued
  by the province (origin ``province``).
* Each (type, version) appears once; algorithms are from a closed list; a validity period ends after it starts.
* The key hierarchy (docs/key_hierarchy.md): per key type, the level each holder receives (province HSM, city HSM,
  PSAM) and the diversification path from the master to the card key. A PSAM gets the Ministry-level consumption
  key (第二条(二), 第十一条) and diversifies by issuer, then card; a city HSM the issuer-level key of its own cards
  (第十二条); TAC keys stay in HSMs (第十三条); recharge keys never reach a PSAM (第二条(四)).

The catalogue is plain data (a list of mappings in ``group_vars``), so modules, action code and tests share
:func:`load_catalogue`.
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import CatalogueError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import (
    KEY_CLASSES,
    RESERVED_CODE_RANGE,
    RESERVED_TYPE_CODES,
    key_id,
    key_label,
    parse_key_label,
)
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.algorithms import ALGORITHMS, USAGES

RULES = "粤交〔2019〕11号"


ORIGINS = ("ministry", "province")


HOLDERS = ("hsm", "sam")


SCOPES = ("province", "city")


# Classes a city may be granted (第五条, 第七条); internal keys (KEKs, SAM issuer, backup) stay in the province (第六条)
CITY_GRANTABLE_CLASSES = ("consumption", "recharge")


SOURCES = {"ministry": ("components", "wrapped"), "province": ("generate",)}


_NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,30}\Z")


#: levels of a diversified key: the master (the Ministry's, or the province's for recharge keys), the issuer-level
#: key ``PBOC(master, issuer factor)``, and the card key ``PBOC(issuer key, card application serial)``
LEVELS = ("master", "issuer")


#: the holders the hierarchy names, and what "none" means: that holder never receives the key type
HIERARCHY_HOLDERS = ("province_hsm", "city_hsm", "psam")


#: how a city code becomes its issuer diversification factor. ``city_code``: the 6-digit code right-aligned in
#: 8 bytes (``440100`` -> ``0000000000440100``), the factor distribution has always derived city keys with. A project
#: choice (docs/key_hierarchy.md): JT/T 978 cards carry an 8-byte issuer identifier, which the Ministry assigns.
ISSUER_FACTORS = ("city_code",)


@dataclass(frozen=True)
class Hierarchy:
    """Which level of one key type each holder receives, and the diversification path from master to card key."""

    path: tuple[str, ...] = ("issuer", "card")  # () for a key that is used as it is (not diversified)
    province_hsm: str = "master"
    city_hsm: str = "issuer"  # 'issuer', 'master' (a province-wide key), or 'none'
    psam: str = "none"  # 'master' (two-level MAC1), 'issuer' (closed scheme, single-level MAC1), or 'none'
    issuer_factor: str = "city_code"

    @property
    def mac1_form(self) -> str | None:
        """The PSAM's MAC1 command form: ``two-level`` (80 70 00 00 24) for the Ministry-level key, ``single-level``
        (80 70 00 00 1C) for a closed scheme's issuer key (or a master diversified by card only), None for a key no
        PSAM holds."""
        if self.psam == "master" and self.path == ("issuer", "card"):
            return "two-level"
        return "single-level" if self.psam in LEVELS else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": ["master", *self.path],
            "province_hsm": self.province_hsm,
            "city_hsm": self.city_hsm,
            "psam": self.psam,
            "issuer_factor": self.issuer_factor,
            "mac1_form": self.mac1_form,
        }


def issuer_factor(city_code: str, convention: str = "city_code") -> bytes:
    """The 8-byte issuer diversification factor of a city (the first level below the master)."""
    if convention != "city_code" or not re.fullmatch(r"[0-9]{6}", str(city_code)):
        raise CatalogueError([f"no issuer factor for city {city_code!r} under convention {convention!r}"])
    return bytes.fromhex(str(city_code).rjust(16, "0"))


@dataclass(frozen=True)
class KeyVersion:
    version: int
    not_before: _dt.date
    not_after: _dt.date
    kcv: str | None = None  # expected KCV (hex) for imported keys
    standby: bool = False  # issued only when a rotation needs it (docs/revocation.md)

    def valid_on(self, day: _dt.date) -> bool:
        return self.not_before <= day <= self.not_after


@dataclass(frozen=True)
class KeyTypeEntry:
    name: str
    key_class: str
    origin: str
    algorithm: str
    code: int
    usage: str
    scope: str
    holders: tuple[str, ...]
    source: str
    versions: tuple[KeyVersion, ...]
    kcv_method: str = "ecb"
    wrapped_by: str | None = None  # label of the transport KEK for source 'wrapped'
    tests_only: bool = False
    description: str = ""
    hierarchy: Hierarchy = field(default_factory=Hierarchy)
    extra: dict[str, Any] = field(default_factory=dict)

    def label(self, version: int, holder: str = "province") -> str:
        return key_label(self.key_class, self.name, version, holder)

    def id(self, version: int, holder: str = "province") -> bytes:
        return key_id(self.key_class, self.code, version, holder)

    def version(self, version: int) -> KeyVersion:
        for v in self.versions:
            if v.version == version:
                return v
        raise KeyError(f"key type {self.name!r} has no version {version}")

    @property
    def sam_allowed(self) -> bool:
        return "sam" in self.holders and self.key_class == "consumption"

    @property
    def city_grantable(self) -> bool:
        return self.key_class in CITY_GRANTABLE_CLASSES

    def psam_holder(self, city_code: str) -> str:
        """The label holder of the key a PSAM of ``city_code`` receives: the Ministry-level key (``province``) or, in
        a closed scheme, the city's issuer-level key (``city-<code>``)."""
        if self.hierarchy.psam == "master":
            return "province"
        if self.hierarchy.psam == "issuer":
            return f"city-{city_code}"
        raise CatalogueError([f"key type {self.name!r}: the key hierarchy gives no level of it to a PSAM"])


@dataclass(frozen=True)
class Catalogue:
    entries: tuple[KeyTypeEntry, ...]

    def __iter__(self) -> Any:
        return iter(self.entries)

    def entry(self, name: str) -> KeyTypeEntry:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(f"key type {name!r} is not in the catalogue")

    def validity_for(self, label: str) -> tuple[_dt.date | None, _dt.date | None]:
        """Validity of the key a project label names (derived keys inherit their master's)."""
        name = parse_key_label(label)
        if name is None:
            return (None, None)
        for e in self.entries:
            if e.name == name.key_type and e.key_class == name.key_class:
                for v in e.versions:
                    if v.version == name.version:
                        return (v.not_before, v.not_after)
        return (None, None)

    def for_sam(self) -> list[KeyTypeEntry]:
        """Key types a SAM may receive: consumption class with ``sam`` among holders (第二条(四))."""
        return [e for e in self.entries if e.sam_allowed]


def assert_sam_allowed(entry: KeyTypeEntry) -> None:
    """Refuse to send a key to a SAM unless it is consumption-class with ``sam`` among its holders."""
    if entry.key_class != "consumption":
        raise CatalogueError([_sam_rule(entry.name, entry.key_class)])
    if "sam" not in entry.holders:
        raise CatalogueError([f"key type {entry.name!r} does not list 'sam' among its holders"])


def _sam_rule(name: str, key_class: str) -> str:
    cn = {"recharge": "充值类", "internal": "内部"}.get(key_class, key_class)
    return (
        f"key type {name!r} is {key_class}-class ({cn}) but lists 'sam' among its holders: "
        f"专用安全存取模块仅存储消费类密钥 ({RULES} 第二条(四)); SAMs hold consumption keys only"
    )


def _date(value: Any, where: str, errors: list[str]) -> _dt.date | None:
    if isinstance(value, _dt.datetime):
        return value.date()
    if isinstance(value, _dt.date):
        return value
    try:
        return _dt.date.fromisoformat(str(value))
    except ValueError:
        errors.append(f"{where}: {value!r} is not a date (YYYY-MM-DD)")
        return None


def _int(value: Any, where: str, errors: list[str], lo: int, hi: int) -> int | None:
    try:
        n = int(value, 0) if isinstance(value, str) else int(value)
    except (TypeError, ValueError):
        errors.append(f"{where}: {value!r} is not a number")
        return None
    if not lo <= n <= hi:
        errors.append(f"{where}: {n} is outside {lo}..{hi}")
        return None
    return n


def _entry(raw: Mapping[str, Any], idx: int, errors: list[str]) -> KeyTypeEntry | None:  # noqa: PLR0912, PLR0915
    n0 = len(errors)
    name = str(raw.get("name", ""))
    where = f"catalogue entry {idx + 1} ({name or 'unnamed'})"
    if not _NAME_RE.match(name):
        errors.append(f"{where}: name must be lower-case letters, digits and _ (max 31), starting with a letter")
    key_class = raw.get("class")
    if key_class not in KEY_CLASSES:
        errors.append(f"{where}: class {key_class!r} is not one of {', '.join(KEY_CLASSES)} ({RULES} 第二条(三))")
    origin = raw.get("origin")
    if origin not in ORIGINS:
        errors.append(f"{where}: origin {origin!r} is not one of {', '.join(ORIGINS)}")
    if key_class == "consumption" and origin == "province":
        errors.append(
            f"{where}: consumption keys (消费类) come from the Ministry, origin must be 'ministry' ({RULES} 第九条)"
        )
    if key_class == "recharge" and origin == "ministry":
        errors.append(
            f"{where}: recharge keys (充值类) are issued by the province, origin must be 'province' ({RULES} 第九条)"
        )
    algorithm = raw.get("algorithm")
    if algorithm not in ALGORITHMS:
        errors.append(f"{where}: unknown algorithm {algorithm!r}; known: {', '.join(ALGORITHMS)}")
    code = _int(raw.get("code"), f"{where}: code", errors, 1, 255)
    if name in RESERVED_TYPE_CODES:  # their labels and IDs would collide with distribution's own objects
        errors.append(
            f"{where}: {name!r} is a type of the collection's own (city KEKs, RSA transport keys, made by "
            "distribution, not from the catalogue); choose another name"
        )
    if key_class == "internal" and code in RESERVED_CODE_RANGE:
        reserved = ", ".join(f"{c:#04x} {n}" for n, c in RESERVED_TYPE_CODES.items())
        errors.append(
            f"{where}: code {code:#04x} is reserved in class internal (0xf0..0xff are the collection's own objects: "
            f"{reserved}); choose another code"
        )
    usage = raw.get("usage", "derive")
    if usage not in USAGES:
        errors.append(f"{where}: usage {usage!r} is not one of {', '.join(USAGES)}")
    scope = raw.get("scope", "province")
    if scope not in SCOPES:
        errors.append(f"{where}: scope {scope!r} is not one of {', '.join(SCOPES)}")
    if scope == "city" and usage != "derive":
        errors.append(f"{where}: a city-scoped key is diversified from its master, so its usage must be 'derive'")
    holders = raw.get("holders", ["hsm"])
    if isinstance(holders, str):
        holders = [holders]
    holders = tuple(holders or ())
    bad = [h for h in holders if h not in HOLDERS]
    if bad or not holders:
        errors.append(f"{where}: holders must be a non-empty list from {', '.join(HOLDERS)}")
    if "hsm" not in holders:
        errors.append(f"{where}: every key is held in the HSM (专用加密机存储所有类别的一卡通密钥, {RULES} 第二条(四))")
    if "sam" in holders and key_class in ("recharge", "internal"):
        errors.append(_sam_rule(name, str(key_class)))
    source = raw.get("source", "generate" if origin == "province" else "components")
    if origin in SOURCES and source not in SOURCES[origin]:
        errors.append(f"{where}: source {source!r} does not fit origin {origin!r} (use {' or '.join(SOURCES[origin])})")
    wrapped_by = raw.get("wrapped_by")
    if source == "wrapped" and not wrapped_by:
        errors.append(f"{where}: source 'wrapped' needs wrapped_by (the label of the transport KEK in the token)")
    kcv_method = raw.get("kcv_method", "ecb")
    if kcv_method not in ("ecb", "cmac"):
        errors.append(f"{where}: kcv_method must be 'ecb' or 'cmac'")
    if kcv_method == "cmac" and str(algorithm).startswith("3DES"):
        errors.append(f"{where}: 3DES KCVs are ECB over zeros; kcv_method 'cmac' is for AES keys")
    hierarchy = _hierarchy(raw.get("hierarchy"), where, errors, str(name), key_class, scope, holders)
    versions: list[KeyVersion] = []
    raw_versions = raw.get("versions") or []
    if not raw_versions:
        errors.append(f"{where}: at least one version is required")
    if not isinstance(raw_versions, list):
        errors.append(f"{where}: versions must be a list of {{version, not_before, not_after}}")
        raw_versions = []
    for vraw in raw_versions:
        if not isinstance(vraw, Mapping):
            errors.append(f"{where}: version entry {vraw!r} is not a mapping of version, not_before, not_after")
            continue
        ver = _int(vraw.get("version"), f"{where}: version", errors, 0, 255)
        vwhere = f"{where} version {ver}"
        nb = _date(vraw.get("not_before"), f"{vwhere}: not_before", errors)
        na = _date(vraw.get("not_after"), f"{vwhere}: not_after", errors)
        if nb and na and na < nb:
            errors.append(f"{vwhere}: validity ends ({na}) before it starts ({nb})")
        kcv = vraw.get("kcv")
        if kcv is not None and not isinstance(kcv, str):  # what was typed cannot be told from the number
            errors.append(
                f"{vwhere}: kcv was read as the {type(kcv).__name__} {kcv!r}, not as text: YAML retypes unquoted "
                'digits (043430 is octal 18200); quote it, e.g. kcv: "043430"'
            )
        elif kcv is not None and not re.fullmatch(r"[0-9A-Fa-f]{6}", kcv):
            errors.append(f"{vwhere}: kcv must be exactly 6 hex digits (a 3-byte KCV), got {len(kcv)} characters")
        standby = vraw.get("standby", False)
        if not isinstance(standby, bool):
            errors.append(f"{vwhere}: standby must be true or false")
        if ver is not None and nb and na:
            versions.append(KeyVersion(ver, nb, na, str(kcv).upper() if kcv is not None else None, standby is True))
    if len(errors) > n0:
        return None
    return KeyTypeEntry(
        name=name,
        key_class=str(key_class),
        origin=str(origin),
        algorithm=str(algorithm),
        code=int(code or 0),
        usage=str(usage),
        scope=str(scope),
        holders=holders,
        source=str(source),
        versions=tuple(versions),
        kcv_method=str(kcv_method),
        wrapped_by=wrapped_by,
        tests_only=bool(raw.get("tests_only", False)),
        description=str(raw.get("description", "")),
        hierarchy=hierarchy or Hierarchy(),
    )


def _default_hierarchy(scope: Any, holders: tuple[str, ...], key_class: Any) -> dict[str, Any]:
    """The hierarchy a key type has when the catalogue does not spell it out: a city-scoped key is diversified by
    issuer then card, the city receives the issuer level, a PSAM (if a holder) the master; a province-scoped key is
    used as it is, by the province and, if grantable, by every city."""
    if scope == "city":
        return {
            "path": ["issuer", "card"],
            "city_hsm": "issuer",
            "psam": "master" if "sam" in holders and key_class == "consumption" else "none",
        }
    sam = "sam" in holders and key_class == "consumption"
    return {
        "path": ["card"] if sam else [],
        "city_hsm": "master" if key_class in CITY_GRANTABLE_CLASSES else "none",
        "psam": "master" if sam else "none",
    }


def _hierarchy(  # noqa: PLR0917 - the fields the hierarchy is checked against
    raw: Any, where: str, errors: list[str], name: str, key_class: Any, scope: Any, holders: tuple[str, ...]
) -> Hierarchy | None:
    n0 = len(errors)
    base = _default_hierarchy(scope, holders, key_class)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        errors.append(f"{where}: hierarchy must be a mapping of path, province_hsm, city_hsm, psam, issuer_factor")
        return None
    unknown = sorted(set(raw) - {"path", *HIERARCHY_HOLDERS, "issuer_factor"})
    if unknown:
        errors.append(f"{where}: hierarchy: unknown field(s) {', '.join(map(str, unknown))}")
    d = base | dict(raw)
    path = d.get("path") or []
    if path not in ([], ["issuer", "card"], ["card"]):
        errors.append(f"{where}: hierarchy path must be [issuer, card] (master -> issuer -> card), [card] or []")
        path = []
    levels = {h: d.get(h, "master" if h == "province_hsm" else "none") for h in HIERARCHY_HOLDERS}
    for holder, level in levels.items():
        if level not in (*LEVELS, "none"):
            errors.append(f"{where}: hierarchy {holder} must be one of {', '.join((*LEVELS, 'none'))}")
    if levels["province_hsm"] != "master":
        errors.append(f"{where}: the province HSM holds the master of every key type ({RULES} 第六条)")
    if levels["city_hsm"] == "issuer" and path != ["issuer", "card"]:
        errors.append(f"{where}: a city HSM receives an issuer-level key only of a type diversified by issuer")
    if levels["city_hsm"] == "master" and scope == "city":
        errors.append(
            f"{where}: a city HSM receives the issuer-level key of its own cards, never the master ({RULES} 第十二条)"
        )
    psam = levels["psam"]
    errors.extend(_psam_level_errors(where, name, key_class, holders, psam, path))
    factor = d.get("issuer_factor", "city_code")
    if factor not in ISSUER_FACTORS:
        errors.append(f"{where}: hierarchy issuer_factor must be one of {', '.join(ISSUER_FACTORS)}")
    if len(errors) > n0:
        return None
    return Hierarchy(
        path=tuple(path),
        province_hsm=str(levels["province_hsm"]),
        city_hsm=str(levels["city_hsm"]),
        psam=str(psam),
        issuer_factor=str(factor),
    )


def _psam_level_errors(  # noqa: PLR0917 - the fields the PSAM's level is checked against
    where: str, name: str, key_class: Any, holders: tuple[str, ...], psam: str, path: list[str]
) -> list[str]:
    errors: list[str] = []
    if psam != "none":
        if key_class != "consumption" or "sam" not in holders:
            errors.append(
                f"{where}: hierarchy gives a PSAM a level of {name!r}, but PSAMs hold only consumption keys with 'sam' "
                f"among their holders ({RULES} 第二条(四))"
            )
        if name == "tac":
            errors.append(
                f"{where}: TAC keys stay in HSMs and are verified at clearing ({RULES} 第十三条); no PSAM holds one"
            )
        if "card" not in path or (psam == "issuer" and path != ["issuer", "card"]):
            errors.append(
                f"{where}: a PSAM diversifies its key down to the card: path must be [issuer, card] (or [card] for a "
                "closed scheme's master), and a PSAM given the issuer level needs the issuer level in the path"
            )
    elif "sam" in holders and key_class == "consumption":
        errors.append(f"{where}: 'sam' is among the holders, so hierarchy psam must name the level a PSAM receives")
    return errors


def load_catalogue(data: Iterable[Mapping[str, Any]] | None) -> Catalogue:
    """Parse and validate the whole catalogue; every violation is reported at once in a CatalogueError."""
    errors: list[str] = []
    if data is None or isinstance(data, str | bytes | Mapping):
        raise CatalogueError(["the key catalogue must be a list of key types"])
    entries: list[KeyTypeEntry] = []
    for idx, raw in enumerate(data):
        if not isinstance(raw, Mapping):
            errors.append(f"catalogue entry {idx + 1} is not a mapping")
            continue
        e = _entry(raw, idx, errors)
        if e is not None:
            entries.append(e)
    seen_versions: dict[tuple[str, int], int] = {}
    seen_codes: dict[tuple[str, int], str] = {}
    for e in entries:
        other = seen_codes.get((e.key_class, e.code))
        if other is not None and other != e.name:
            errors.append(f"key types {other!r} and {e.name!r} share class {e.key_class} and code {e.code:#04x}")
        seen_codes[(e.key_class, e.code)] = e.name
        for v in e.versions:
            if (e.name, v.version) in seen_versions:
                errors.append(f"duplicate key type/version: {e.name!r} version {v.version} is declared twice")
            seen_versions[(e.name, v.version)] = 1
    names = [e.name for e in entries]
    for name in sorted({n for n in names if names.count(n) > 1}):
        if not any("duplicate key type/version: " + repr(name) in err for err in errors):
            errors.append(f"key type {name!r} is declared in {names.count(name)} entries; list all its versions in one")
    if errors:
        raise CatalogueError(errors)
    return Catalogue(tuple(entries))


def catalogue_summary(cat: Catalogue) -> list[dict[str, Any]]:
    """A JSON-friendly view of a validated catalogue (labels per version, for reports)."""
    out = []
    for e in cat:
        out.append(
            {
                "name": e.name,
                "class": e.key_class,
                "origin": e.origin,
                "algorithm": e.algorithm,
                "code": e.code,
                "usage": e.usage,
                "scope": e.scope,
                "holders": list(e.holders),
                "source": e.source,
                "kcv_method": e.kcv_method,
                "tests_only": e.tests_only,
                "hierarchy": e.hierarchy.as_dict(),
                "versions": [
                    {
                        "version": v.version,
                        "not_before": v.not_before.isoformat(),
                        "not_after": v.not_after.isoformat(),
                        "kcv": v.kcv,
                        "standby": v.standby,
                        "label": e.label(v.version),
                        "id": e.id(v.version).hex(),
                    }
                    for v in e.versions
                ],
            }
        )
    return out
