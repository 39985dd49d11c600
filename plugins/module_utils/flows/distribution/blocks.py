# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A city's key blocks in OpenBao (``cities/<city>/blocks/<type>.v<VV>``): write, fetch, retire, remove.

OpenBao only, no HSM: the rotation flow retires versions through this file without carrying PKCS#11 code.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import OpenBao


def publish_blocks(
    bao: OpenBao, city: str, blocks: dict[str, tuple[str, dict[str, Any]]], check_mode: bool
) -> list[str]:
    """Write the blocks OpenBao does not already hold byte for byte. Returns the names written."""
    written = []
    for name, (block, header) in sorted(blocks.items()):
        path = bao.layout.city(city, f"blocks/{name}")
        current = bao.kv_read(bao.layout.mount, path)
        if current and current["data"].get("block") == block:
            continue
        written.append(name)
        if not check_mode:
            bao.kv_write(
                bao.layout.mount, path, {"block": block, "key_type": header["key_type"], "version": header["version"]}
            )
    return written


def retire_blocks(bao: OpenBao, city: str, keep: Iterable[str], check_mode: bool) -> list[str]:
    """Destroy (every version and the metadata) the city's blocks that are no longer granted: a retired or revoked
    key version, or a grant taken away. Returns the names removed."""
    return remove_blocks(
        bao, city, set(bao.kv_list(bao.layout.mount, bao.layout.city(city, "blocks"))) - set(keep), check_mode
    )


def remove_blocks(bao: OpenBao, city: str, names: Iterable[str], check_mode: bool) -> list[str]:
    """Destroy these blocks of the city, if present (every version and the metadata). Returns the names removed."""
    present = set(bao.kv_list(bao.layout.mount, bao.layout.city(city, "blocks")))
    gone = sorted(set(names) & present)
    for name in gone:
        if not check_mode:
            path = bao.layout.city(city, f"blocks/{name}")
            bao.call(
                f"destroying {bao.layout.mount}/{path}",
                bao.client.secrets.kv.v2.delete_metadata_and_all_versions,
                path,
                mount_point=bao.layout.mount,
            )
    return gone


def fetch_blocks(bao: OpenBao, city: str) -> dict[str, str]:
    blocks = {}
    for name in bao.kv_list(bao.layout.mount, bao.layout.city(city, "blocks")):
        record = bao.kv_read(bao.layout.mount, bao.layout.city(city, f"blocks/{name}"))
        if record:
            blocks[name] = str(record["data"].get("block", ""))
    return blocks
