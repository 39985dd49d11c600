"""The lab's Ministry keys: tests-only keys whose custodian components are public, and the custodian files for them.

These components exist only in the lab and in tests (inventories/lab key_catalogue.yml marks the keys
`tests_only`). Being public is what lets the tests prove the values never appear anywhere else.

    .venv/bin/python -m tunion_lab.ministry_test_keys custodians DIR   # what bin/rollout hands to site.yml
    .venv/bin/python -m tunion_lab.ministry_test_keys kcvs              # the combined keys' KCVs
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from tunion_lab.sam_emulator.card import kcv

#: tests-only components (3 custodians each) of the lab's Ministry keys
TEST_COMPONENTS: dict[str, list[str]] = {
    "purchase": [
        "250A41031FFD5B24D95CF00EC114EDA3",
        "AE44EF8DF1E1C93EFAE2B8509C81D1F8",
        "C7DC4B1AF016E55355C5298D7DCE3B90",
    ],
    "tac": ["C646FD7E8EA6B637ECB3B7B1CB422422", "561942FC218A8C5B0BE446CC680E18E5", "16808DA66A82CB06FB28D69E893C75F7"],
}


def clear_test_key(name: str) -> bytes:
    """The clear value of a tests-only key (XOR of its components)."""
    out = bytearray(16)
    for component in TEST_COMPONENTS[name]:
        for i, b in enumerate(bytes.fromhex(component)):
            out[i] ^= b
    return bytes(out)


def write_custodian_file(path: Path, value: str, kcv: str) -> Path:
    """One custodian's component in the project's custodian format (value, kcv): a 0600 file in a 0700 directory."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"value: {value}\nkcv: {kcv}\n")
    return path


def write_custodian_files(root: Path, names: list[str] | None = None) -> list[Path]:
    """One directory per custodian (custodian-N), one file per key version: what each custodian hands in."""
    return [
        write_custodian_file(root / f"custodian-{i}" / f"{name}-v01.yml", comp, kcv(bytes.fromhex(comp)).hex().upper())
        for name in names or list(TEST_COMPONENTS)
        for i, comp in enumerate(TEST_COMPONENTS[name], 1)
    ]


def main(argv: list[str]) -> int:
    if len(argv) == 2 and argv[0] == "custodians":
        for p in write_custodian_files(Path(argv[1])):
            print(p)
        return 0
    if argv == ["kcvs"]:
        for n in TEST_COMPONENTS:
            print(n, kcv(clear_test_key(n)).hex().upper())
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
