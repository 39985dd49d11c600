# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The journal of key operations (粤交〔2019〕11号 第十五条, 第十六条): one event per change of key state, hash-chained.

An event is a JSON object of the fields in :data:`FIELDS`. Its canonical encoding is UTF-8 JSON with sorted keys and
no spaces; its digest is SHA-256 over the canonical encoding of the event without ``digest``. Each event holds the
digest of the one before in ``prev`` (:data:`GENESIS` for the first) and its position in ``seq`` (from 1), so a
deleted, changed, reordered or inserted event breaks the chain at the first bad one. Truncating the tail is found
against an anchor (``{"seq", "digest"}`` of a head, MAC'd in an HSM elsewhere): the chain must still hold that event.

An event never holds a key value: the key is named by label, version and KCV (at most 3 bytes, 6 hex digits), and
:func:`new_event` refuses any other key field.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import JournalError

FORMAT = "tunion-journal/1"
GENESIS = "0" * 64

#: the operations of issue 13: every module that changes key state names one of them
OPERATIONS = frozenset(
    {
        "generate",
        "import",
        "derive",
        "publish",
        "install",
        "inject",
        "destroy",
        "suspend",
        "revoke",
        "rotate",
        "retire",
        "blacklist_publish",
        "blacklist_install",
        "backup",
        "restore",
        "enrol",
        "access",
    }
)
OUTCOMES = frozenset({"ok", "failed"})
FIELDS = ("format", "seq", "prev", "time", "run_id", "who", "what", "key", "where", "outcome", "detail", "digest")
KEY_FIELDS = frozenset({"label", "type", "version", "kcv", "holder"})
_KCV = re.compile(r"[0-9A-Fa-f]{0,6}\Z")


def canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def digest(event: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical({k: v for k, v in event.items() if k != "digest"})).hexdigest()


def _key(key: Mapping[str, Any] | None) -> dict[str, Any]:
    key = dict(key or {})
    extra = sorted(set(key) - KEY_FIELDS)
    if extra:
        raise JournalError(f"journal: a key is named by {sorted(KEY_FIELDS)} only, not {extra} (never a value)")
    kcv = key.get("kcv")
    if kcv is not None and not _KCV.match(str(kcv)):
        raise JournalError("journal: a KCV is at most 3 bytes (6 hex digits); refused as it could carry key material")
    return key


def new_event(
    what: str,
    key: Mapping[str, Any] | None,
    *,
    who: Mapping[str, Any],
    where: Mapping[str, Any],
    time: str,
    run_id: str | None,
    outcome: str = "ok",
    detail: str = "",
) -> dict[str, Any]:
    """An event without its place in the chain (``seq``, ``prev``, ``digest`` are set by :func:`chained`)."""
    if what not in OPERATIONS:
        raise JournalError(f"journal: unknown operation {what!r} (one of {sorted(OPERATIONS)})")
    if outcome not in OUTCOMES:
        raise JournalError(f"journal: outcome is one of {sorted(OUTCOMES)}, not {outcome!r}")
    return {
        "format": FORMAT,
        "time": time,
        "run_id": run_id or "",
        "who": {k: str(v) for k, v in who.items() if v is not None},
        "what": what,
        "key": _key(key),
        "where": {k: str(v) for k, v in where.items() if v is not None},
        "outcome": outcome,
        "detail": str(detail)[:500],
    }


def chained(event: Mapping[str, Any], seq: int, prev: str) -> dict[str, Any]:
    """``event`` placed after the event of digest ``prev``, at position ``seq``, with its own digest."""
    out = dict(event, seq=seq, prev=prev)
    out.pop("digest", None)
    out["digest"] = digest(out)
    return out


@dataclass(frozen=True)
class Verdict:
    """The result of :func:`verify`: ``first_bad`` is the position (1-based seq) of the first bad event, or None."""

    events: int
    head_seq: int
    head_digest: str
    first_bad: int | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.first_bad is None

    def as_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "events": self.events,
            "head_seq": self.head_seq,
            "head_digest": self.head_digest,
            "first_bad": self.first_bad,
            "reason": self.reason,
        }


def verify(events: Iterable[Mapping[str, Any]], anchors: Iterable[Mapping[str, Any]] = ()) -> Verdict:  # noqa: PLR0911
    """Walk the chain in stored order; name the first event whose position, link or digest is wrong, then check
    that every anchor's event is still in the chain with the anchored digest (a truncated tail fails here)."""
    prev, seq, count = GENESIS, 0, 0
    seen: dict[int, str] = {}
    for event in events:
        count += 1
        expected = seq + 1
        if event.get("seq") != expected:
            return Verdict(count - 1, seq, prev, expected, f"event {expected}: found seq {event.get('seq')!r} here")
        if event.get("prev") != prev:
            return Verdict(count - 1, seq, prev, expected, f"event {expected}: does not follow event {seq}")
        if event.get("digest") != digest(event):
            return Verdict(count - 1, seq, prev, expected, f"event {expected}: its content does not match its digest")
        prev, seq = str(event["digest"]), expected
        seen[seq] = prev
    for anchor in anchors:
        a_seq, a_digest = anchor.get("seq"), anchor.get("digest")
        if not isinstance(a_seq, int) or a_seq < 0:
            return Verdict(count, seq, prev, seq + 1, f"anchor is malformed (seq {a_seq!r})")
        if a_seq == 0:
            continue
        if a_seq not in seen:
            return Verdict(
                count, seq, prev, seq + 1, f"event {seq + 1}: missing; an anchor holds event {a_seq} (truncated)"
            )
        if seen[a_seq] != a_digest:
            return Verdict(count, seq, prev, a_seq, f"event {a_seq}: differs from the anchored digest")
    return Verdict(count, seq, prev)


def anchor_body(seq: int, head_digest: str, chain: str, time: str) -> dict[str, Any]:
    """What an anchor MACs: the chain's name, its head's position and digest, and when."""
    return {"format": FORMAT, "chain": chain, "seq": seq, "digest": head_digest, "time": time}
