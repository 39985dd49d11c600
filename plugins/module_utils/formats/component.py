# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A custodian's key component (split knowledge, 粤交〔2019〕11号 第十六条): the file each custodian fills in.

The file has two lines, ``value: <hex>`` and ``kcv: <hex>``, and is read exactly as typed. It is not parsed as YAML:
YAML retypes unquoted digits, so a genuine KCV ``043430`` would become the octal number 18200, ``123456`` a decimal
and ``0b1010`` the binary 10. Blank lines, ``#`` comments, a ``---`` line and quotes around a value are accepted.
No message ever contains a component value.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import ComponentError

FIELDS = ("value", "kcv")
FORMAT = "value: <hex> and kcv: <hex>, one per line"
_LINE_RE = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)[ \t]*:(?:[ \t]+(?P<text>.*))?$")


@dataclass(frozen=True)
class Component:
    """One custodian's component as text: ``value`` (secret, never shown) and its ``kcv``."""

    value: str = field(repr=False)
    kcv: str


def _unquoted(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1].strip()
    return re.sub(r"[ \t]+#.*$", "", text)  # an unquoted value may carry a trailing comment, as in YAML


def parse_component(text: str, where: str) -> Component:
    """The component in the text of a custodian's file; ``where`` names it in messages (never the value)."""
    fields: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#") or stripped == "---":
            continue
        match = _LINE_RE.match(stripped)
        if match is None:
            raise ComponentError(f"{where}, line {number}: not a 'name: value' line; a component file holds {FORMAT}")
        name = match["name"]
        if name not in FIELDS:
            raise ComponentError(f"{where}, line {number}: unknown field {name!r}; a component file holds {FORMAT}")
        if name in fields:
            raise ComponentError(f"{where}, line {number}: {name} is given twice")
        fields[name] = _unquoted(match["text"] or "")
    missing = [name for name in FIELDS if not fields.get(name)]
    if missing:
        raise ComponentError(f"{where}: no {' and no '.join(missing)}; a component file holds {FORMAT}")
    return Component(fields["value"], fields["kcv"])


def component_of(raw: Any, where: str) -> Component:
    """A component as a module receives it: the text of a custodian's file, or a mapping ``{value, kcv}`` of text.

    A mapping read with ``from_yaml`` may hold numbers where the custodian typed digits; they are refused, since
    what was typed cannot be recovered from them (043430 and 18200 are the same number)."""
    if isinstance(raw, str):
        return parse_component(raw, where)
    if not isinstance(raw, Mapping):
        raise ComponentError(f"{where} is neither the text of a component file nor a mapping of value and kcv")
    extra = sorted(str(k) for k in raw if k not in FIELDS)
    if extra:
        raise ComponentError(f"{where}: unknown field(s) {', '.join(extra)}; a component is {FORMAT}")
    for name in FIELDS:
        if raw.get(name) is None or raw.get(name) == "":
            raise ComponentError(f"{where}: no {name}; a component is {FORMAT}")
        if not isinstance(raw[name], str):
            raise ComponentError(
                f"{where}: {name} was read as a {type(raw[name]).__name__}, not as the text the custodian typed "
                "(YAML retypes unquoted digits: 043430 becomes 18200). Pass the file's text, unparsed "
                "(lookup('ansible.builtin.file', ...) without from_yaml), or quote the value in the file"
            )
    return Component(raw["value"].strip(), raw["kcv"].strip())
