# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the province grants each city: key types and versions (the ``targets`` option of the distribution modules)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import DistributionError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import CITY_CODE_RE, check_cities
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.catalogue import (
    CITY_GRANTABLE_CLASSES,
    RULES,
    load_catalogue,
)


def check_city(city: Any, city_code: Any) -> None:
    """One city and its code, refused by name before anything is reached."""
    check_cities([city])
    if not CITY_CODE_RE.match(str(city_code)):
        raise DistributionError(f"city {city}: city_code {city_code!r} is not 6 digits; nothing was changed")


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


def check_grantable(city: str, grant: Grant, key_class: str) -> None:
    """Refuse a grant of a class no city may hold: internal keys never leave the province HSM."""
    if key_class not in CITY_GRANTABLE_CLASSES:
        raise DistributionError(
            f"city {city}: grant {grant.key_type!r} v{grant.version} is a {key_class}-class key, which no city may "
            f"hold: the province keeps it ({RULES} 第六条); a city is granted only "
            f"{' or '.join(CITY_GRANTABLE_CLASSES)} keys (第五条, 第七条); remove the grant; nothing was changed"
        )


@dataclass
class CityTarget:
    city: str
    city_code: str
    grants: list[Grant]
    kek_version: int = 1


def parse_targets(
    raw: Iterable[dict[str, Any]], catalogue: Iterable[Mapping[str, Any]] | None = None
) -> list[CityTarget]:
    """The targets, checked before anything is reached; with a ``catalogue``, every grant must name one of its types."""
    classes = {e.name: e.key_class for e in load_catalogue(catalogue)} if catalogue is not None else None
    known = set(classes) if classes is not None else None
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
        target = targets[-1]
        check_city(target.city, target.city_code)
        unknown = [g for g in target.grants if known is not None and g.key_type not in known]
        if unknown:
            raise DistributionError(
                f"target {target.city}: grant {unknown[0].key_type!r} v{unknown[0].version} names no key type of the "
                f"catalogue (its types: {', '.join(sorted(known or ()))}); correct the grant"
            )
        for grant in target.grants:
            if classes is not None:
                check_grantable(target.city, grant, classes[grant.key_type])
    return targets
