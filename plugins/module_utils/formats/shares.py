# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The backup KEK's M-of-N custodian scheme (粤交〔2019〕11号 第十四条): XOR component sets, one set per quorum.

Every group of M custodians out of N (a *quorum*) holds its own XOR split of the backup KEK: each member holds one
component of that set. Any full quorum combines its components inside the HSM, the way custodian components already
are (``HsmToken.import_components``); fewer than M custodians lack at least one component of every set, and each set
is uniformly random without its last component, so they learn nothing about the KEK. A custodian holds one component
per quorum they belong to, ``C(N-1, M-1)`` in all; ``import_components`` combines 2 or 3, so M is 2 or 3
(docs/backup.md says what this gives up against Shamir's scheme).

Each component is a component file of :mod:`formats.component` (``value`` and its own ``kcv``), so a mistyped share
is named by custodian before anything is combined. No function here sees the KEK itself.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import ComponentError

#: the thresholds the HSM combination supports (import_components XORs 2 or 3 components)
THRESHOLDS = (2, 3)
_CUSTODIAN_RE = re.compile(r"^[a-z][a-z0-9_-]{0,30}\Z")


@dataclass(frozen=True)
class Scheme:
    """N named custodians and a threshold M."""

    custodians: tuple[str, ...]
    threshold: int

    def __post_init__(self) -> None:
        problems = [
            f"custodian name {c!r} is not [a-z][a-z0-9_-]*" for c in self.custodians if not _CUSTODIAN_RE.match(c)
        ]
        if len(set(self.custodians)) != len(self.custodians):
            problems.append("custodian names must be distinct")
        if self.threshold not in THRESHOLDS:
            problems.append(
                f"threshold {self.threshold} is not supported: the HSM combines 2 or 3 XOR components (docs/backup.md)"
            )
        elif len(self.custodians) < self.threshold:
            problems.append(f"{len(self.custodians)} custodians cannot reach a threshold of {self.threshold}")
        if problems:
            raise ComponentError("backup custodians: " + "; ".join(problems))

    @property
    def quorums(self) -> list[tuple[str, ...]]:
        """Every quorum, in a fixed order (custodians in the order declared)."""
        return list(itertools.combinations(self.custodians, self.threshold))

    def quorum_of(self, present: list[str] | tuple[str, ...]) -> tuple[str, ...]:
        """The quorum formed by exactly the custodians present; fewer than M, unknown or repeated names are refused."""
        unknown = sorted(set(present) - set(self.custodians))
        if unknown:
            raise ComponentError(f"{', '.join(unknown)} not among the backup custodians ({', '.join(self.custodians)})")
        if len(set(present)) != len(present):
            raise ComponentError("a custodian is named twice; each custodian's share counts once")
        if len(present) < self.threshold:
            raise ComponentError(
                f"{len(present)} custodian share(s) given, the backup KEK needs {self.threshold} of "
                f"{len(self.custodians)}: nothing was combined or written"
            )
        if len(present) > self.threshold:
            raise ComponentError(f"give exactly {self.threshold} custodians' shares, not {len(present)}")
        order = {c: i for i, c in enumerate(self.custodians)}
        return tuple(sorted(present, key=order.__getitem__))


def quorum_id(quorum: tuple[str, ...]) -> str:
    """The name of a quorum's component set, e.g. ``alice+carol``."""
    return "+".join(quorum)


def share_file_name(key_type: str, version: int, quorum: tuple[str, ...]) -> str:
    """The file, in a custodian's own directory, holding that custodian's component of one quorum's set."""
    return f"{key_type}-v{version:02x}-{quorum_id(quorum)}.txt"


def share_text(value_hex: str, kcv_hex: str, *, custodian: str, quorum: tuple[str, ...]) -> str:
    """A custodian's component as a component file (value and its own KCV), headed by whom and which set it is."""
    return (
        f"# backup KEK component of custodian {custodian}, set {quorum_id(quorum)} (粤交〔2019〕11号 第十四条)\n"
        "# keep offline; give it only to a restore with the other members of this set\n"
        f"value: {value_hex}\nkcv: {kcv_hex}\n"
    )
