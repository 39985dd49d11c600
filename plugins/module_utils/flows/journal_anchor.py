# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Anchors of a node's journal: its head MAC'd in the node's own HSM (docs/journal.md).

Apart from flows/journal.py, which every module ships through base.py, so that only an anchoring module ships the
PKCS#11 boundary. An anchor is ``formats.journal.anchor_body`` plus the CMAC key's label and the CMAC (hex).
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.clock import now
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import JournalError
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.names import key_label
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.journal import Verdict, anchor_body, canonical
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.policy import KeyPolicy
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import HsmToken


def anchor_key_label(holder: str) -> str:
    """The HSM key that MACs this node's anchors: ``internal.journal_mac.v01.<holder>`` (province or city-<code>)."""
    return key_label("internal", "journal_mac", 1, holder)


def anchor_key(hsm: HsmToken, holder: str, *, create: bool) -> Any:
    label = anchor_key_label(holder)
    key = hsm.find_key(label=label)
    if key is None and create:
        policy = KeyPolicy(usage="mac", extractable=False, wrap_with_trusted=False)
        key = hsm.generate_secret("AES-256", label, None, policy)
    return key


def sign_anchor(hsm: HsmToken, verdict: Verdict, chain: str, holder: str, *, create_key: bool) -> dict[str, Any]:
    """An anchor of a chain that verified: its head, CMAC'd in this node's HSM (the key never leaves it)."""
    if not verdict.ok:
        raise JournalError(f"journal {chain} does not verify, so it is not anchored: {verdict.reason}")
    key = anchor_key(hsm, holder, create=create_key)
    if key is None:
        raise JournalError(f"no journal anchor key {anchor_key_label(holder)} in this HSM")
    body = anchor_body(verdict.head_seq, verdict.head_digest, chain, now())
    return dict(body, key=anchor_key_label(holder), cmac=hsm.cmac(key, canonical(body)).hex().upper())


def check_anchor(hsm: HsmToken, anchor: Mapping[str, Any], holder: str) -> None:
    """Refuse an anchor whose CMAC this node's HSM does not confirm (forged or altered in OpenBao)."""
    key = anchor_key(hsm, holder, create=False)
    body = {k: v for k, v in anchor.items() if k not in ("key", "cmac")}
    if key is None or not hmac.compare_digest(
        hsm.cmac(key, canonical(body)).hex().upper(), str(anchor.get("cmac", "")).upper()
    ):
        raise JournalError(f"journal anchor at seq {anchor.get('seq')!r}: MAC check failed in the HSM")
