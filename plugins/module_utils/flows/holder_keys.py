# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The HSM objects of one holder (by label), and destroying them: labels and KCVs are reported, never values."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import HsmError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import KeyName, parse_key_label
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.distribution.keys import kcv_hex
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import HsmToken


def object_label(obj: Any) -> str:
    """An object's label, or '' for objects without one (not ours)."""
    try:
        return str(obj.label or "")
    except Exception:  # noqa: BLE001 - python-pkcs11 raises several kinds for a missing label
        return ""


def holder_objects(
    hsm: HsmToken,
    holder: str,
    key_types: Iterable[str] | None = None,
    *,
    select: Callable[[KeyName], bool] | None = None,
) -> list[Any]:
    """Objects whose label names ``holder``: optionally only these key types, or those ``select`` accepts."""
    types = set(key_types or [])
    found = []
    for obj in hsm.list_keys():
        name = parse_key_label(object_label(obj))
        if name and name.holder == holder and (not types or name.key_type in types) and (not select or select(name)):
            found.append(obj)
    return found


def destroy_holder_objects(
    hsm: HsmToken,
    holder: str,
    *,
    key_types: Iterable[str] | None = None,
    select: Callable[[KeyName], bool] | None = None,
    check_mode: bool,
) -> list[dict[str, str]]:
    """Destroy every object whose label names ``holder`` (optionally only these key types, or those ``select``
    accepts). Returns what went: label, object class and, for secret keys, the KCV (computed in the HSM before
    destruction; never a value)."""
    destroyed: list[dict[str, str]] = []
    chosen = holder_objects(hsm, holder, key_types, select=select)
    for obj in sorted(chosen, key=lambda o: (o.label, int(o.object_class))):
        entry = {"label": obj.label, "object_class": obj.object_class.name.lower()}
        if obj.object_class.name == "SECRET_KEY":
            try:
                entry["kcv"] = kcv_hex(hsm, obj)
            except HsmError:
                entry["kcv"] = ""
        if not check_mode:
            hsm.destroy(obj)
        destroyed.append(entry)
    return destroyed
