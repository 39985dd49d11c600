#!/usr/bin/env python3
"""Interop check, independent of tunion-keyops: it imports nothing from the project.

Talks to every PSAM presented in the readers with plain pyscard, sends it only test cards' purchase data (the
two-level form 80 70 00 00 24: card serial, then the card issuer's diversification factor; then 80 72), and checks
each MAC1 against an independent computation with the `cryptography` package:

    K    = XOR of the tests-only purchase master key's components (given in the JSON input): the Ministry-level key
    Ki   = PBOC(K, issuer factor)      the issuer-level key       PBOC(M, D) = 3DES(M, D) || 3DES(M, ~D)
    DPK  = PBOC(Ki, card serial)       the test card's purchase key
    SESPK= 3DES(DPK, random || counter || PSAM serial[2:4])      a single-DES session key
    MAC1 = DES-CBC-MAC(SESPK, amount || type || terminal || date-time), ISO 9797-1 padding 2, first 4 bytes
    MAC2 = DES-CBC-MAC(SESPK, amount)  sent back with 80 72; the SAM must accept it (9000)

Usage: pyscard_mac1.py INPUT.json   (prints a JSON report; exit 0 when every SAM matched for every card)
INPUT: {"purchase_components": [hex, ...], "serials": [SAM serial, ...], "key_version": 1, "readers": [substr],
        "cards": [{"serial", "issuer"}, ...], "purchase": {"random", "counter", "amount", "type", "datetime"},
        "idle_seconds": 3}
"""

from __future__ import annotations

import json
import sys
import threading
import time

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from smartcard.scard import (
    SCARD_LEAVE_CARD,
    SCARD_PCI_T0,
    SCARD_PROTOCOL_T0,
    SCARD_RESET_CARD,
    SCARD_S_SUCCESS,
    SCARD_SCOPE_USER,
    SCARD_SHARE_EXCLUSIVE,
    SCARD_STATE_UNAWARE,
    SCardConnect,
    SCardDisconnect,
    SCardEstablishContext,
    SCardGetStatusChange,
    SCardListReaders,
    SCardReleaseContext,
    SCardTransmit,
)

PSAM_AID = bytes.fromhex("D15600000150534D")


def ecb(key: bytes, data: bytes) -> bytes:
    k = key * 3 if len(key) == 8 else key + key[:8]
    enc = Cipher(TripleDES(k), modes.ECB()).encryptor()  # PBOC diversification is ECB
    return enc.update(data) + enc.finalize()


def pboc(master: bytes, d8: bytes) -> bytes:
    return ecb(master, d8) + ecb(master, bytes(b ^ 0xFF for b in d8))


def mac(key8: bytes, data: bytes) -> bytes:
    data += b"\x80" + bytes(-(len(data) + 1) % 8)
    enc = Cipher(TripleDES(key8 * 3), modes.CBC(bytes(8))).encryptor()
    return (enc.update(data) + enc.finalize())[-8:][:4]


class Failed(Exception):
    pass


def transmit(h: int, apdu: bytes, length: int) -> bytes:
    rv, resp = SCardTransmit(h, SCARD_PCI_T0, list(apdu))
    if rv != SCARD_S_SUCCESS or len(resp) != length + 2 or resp[-2:] != [0x90, 0x00]:
        raise Failed(f"{apdu[:2].hex()}: {bytes(resp).hex() if rv == SCARD_S_SUCCESS else hex(rv)}")
    return bytes(resp[:-2])


def check_sam(h: int, cfg: dict, key: bytes) -> dict:
    buy = {k: bytes.fromhex(v) for k, v in cfg["purchase"].items()}
    fci = transmit(h, bytes([0, 0xA4, 4, 0, len(PSAM_AID)]) + PSAM_AID, 4 + len(PSAM_AID))
    if fci[4:] != PSAM_AID:
        raise Failed("not the PSAM FCI")
    serial = transmit(h, bytes.fromhex("00B095000E"), 14)[:10].hex().upper()
    terminal = transmit(h, bytes.fromhex("00B0960006"), 6)
    if serial not in cfg["serials"]:
        return {"serial": serial, "skipped": "not in the input's serials"}
    cards = []
    for card in cfg["cards"]:
        number, issuer = bytes.fromhex(card["serial"]), bytes.fromhex(card["issuer"])
        data = (
            buy["random"] + buy["counter"] + buy["amount"] + buy["type"] + buy["datetime"]
            + bytes([cfg.get("key_version", 1), 0x01]) + number + issuer
        )  # fmt: skip
        out = transmit(h, bytes([0x80, 0x70, 0, 0, len(data)]) + data, 8)
        tsn, mac1 = out[:4], out[4:]
        dpk = pboc(pboc(key, issuer), number)
        sespk = ecb(dpk, buy["random"] + buy["counter"] + tsn[2:])
        want = mac(sespk, buy["amount"] + buy["type"] + terminal + buy["datetime"])
        transmit(h, bytes([0x80, 0x72, 0, 0, 4]) + mac(sespk, buy["amount"]), 0)  # MAC2 accepted, or Failed
        cards.append({"card": card["serial"], "mac1": mac1.hex(), "expected": want.hex(), "ok": mac1 == want})
    return {"serial": serial, "cards": cards, "ok": all(c["ok"] for c in cards)}


def worker(reader: str, cfg: dict, key: bytes, out: list, lock: threading.Lock) -> None:
    _, ctx = SCardEstablishContext(SCARD_SCOPE_USER)
    done: set[str] = set()
    last = time.monotonic()
    try:
        while time.monotonic() - last < cfg.get("idle_seconds", 3):
            rv, h, _ = SCardConnect(ctx, reader, SCARD_SHARE_EXCLUSIVE, SCARD_PROTOCOL_T0)
            if rv != SCARD_S_SUCCESS:
                SCardGetStatusChange(ctx, 300, [(reader, SCARD_STATE_UNAWARE)])
                time.sleep(0.05)
                continue
            try:
                res = check_sam(h, cfg, key)
            except Failed as exc:  # vpcd can garble an exchange: the SAM stays in for another try
                SCardDisconnect(h, SCARD_LEAVE_CARD)
                with lock:
                    out.append({"reader": reader, "transient": str(exc)})
                continue
            if res["serial"] in done:
                SCardDisconnect(h, SCARD_LEAVE_CARD)
                time.sleep(0.005)
                continue
            done.add(res["serial"])
            SCardDisconnect(h, SCARD_RESET_CARD)  # done: the machine presents the next SAM
            last = time.monotonic()
            with lock:
                out.append(dict(res, reader=reader))
    finally:
        SCardReleaseContext(ctx)


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        cfg = json.load(f)
    key = bytes(len(bytes.fromhex(cfg["purchase_components"][0])))
    for comp in cfg["purchase_components"]:
        key = bytes(a ^ b for a, b in zip(key, bytes.fromhex(comp), strict=True))
    _, ctx = SCardEstablishContext(SCARD_SCOPE_USER)
    _, names = SCardListReaders(ctx, [])
    SCardReleaseContext(ctx)
    readers = [n for n in names if any(p in n for p in cfg.get("readers", [""]))]
    out: list = []
    lock = threading.Lock()
    threads = [threading.Thread(target=worker, args=(r, cfg, key, out, lock)) for r in readers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    sams = [r for r in out if "ok" in r]
    report = {
        "readers": readers,
        "checked": len(sams),
        "matched": sum(1 for r in sams if r["ok"]),
        "mismatches": [r for r in sams if not r["ok"]],
        "skipped": [r for r in out if "skipped" in r],
        "transient": sum(1 for r in out if "transient" in r),
        "serials": sorted(r["serial"] for r in sams),
    }
    print(json.dumps(report))
    return 0 if sams and not report["mismatches"] else 1


if __name__ == "__main__":
    sys.exit(main())
