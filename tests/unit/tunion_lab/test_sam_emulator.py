# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The PSAM emulator on its own: the profile's answers against independent `cryptography` computations, its
sealed persistent state, and the vpcd framing/feeder against a stand-in vpcd server (no pcscd)."""

from __future__ import annotations

import os
import socket
import struct
import threading
from pathlib import Path

import pytest
from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes
from cryptography.hazmat.primitives.keywrap import aes_key_wrap

from tests.support.reference import pboc_diversify
from tunion_lab.sam_emulator import server as srv
from tunion_lab.sam_emulator.card import ATR, CardState, Faults, PsamCard
from tunion_lab.sam_emulator.store import StateStore

SERIAL = "44440100000000000001"
MK = bytes.fromhex("0123456789ABCDEFFEDCBA9876543210")
KEK = bytes.fromhex("00112233445566778899AABBCCDDEEFF")
PURCHASE = bytes.fromhex("404142434445464748494A4B4C4D4E4F")
CARD = bytes.fromhex("4401000000000001")


def cbc(key16: bytes, data: bytes) -> bytes:
    enc = Cipher(TripleDES(key16 + key16[:8]), modes.CBC(bytes(8))).encryptor()
    return enc.update(data) + enc.finalize()


def ecb(key: bytes, data: bytes) -> bytes:
    k = key * 3 if len(key) == 8 else key + key[:8]
    enc = Cipher(TripleDES(k), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def pad(data: bytes) -> bytes:
    data += b"\x80"
    return data + bytes(-len(data) % 8)


def tk() -> bytes:
    return pboc_diversify(MK, b"TUNIONTK")


def new_card(faults: Faults | None = None, saved: list | None = None) -> PsamCard:
    st = CardState(SERIAL, "440100000001", MK, tk(), KEK)
    return PsamCard(st, (saved.append if saved is not None else lambda s: None), faults)


def ok(resp: bytes) -> bytes:
    assert resp[-2:] == b"\x90\x00", resp.hex()
    return resp[:-2]


def authenticate(card: PsamCard) -> bytes:
    chal = ok(card.process(bytes.fromhex("0084000008")))
    ok(card.process(bytes.fromhex("0082000008") + ecb(MK, chal)))
    return chal


def write_key_apdu(chal: bytes, seq: int, usage: int = 1, key: bytes = PURCHASE, mac_key: bytes | None = None) -> bytes:
    header = bytes([usage, 1, 1]) + ecb(key, bytes(8))[:3]
    cryptogram = cbc(tk(), aes_key_wrap(KEK, key))
    mac = cbc(mac_key or tk(), pad(chal + bytes([seq, 0x80, 0xD4, 1, 0]) + header + cryptogram))[-8:][:4]
    body = header + cryptogram + mac
    return bytes([0x80, 0xD4, 1, 0, len(body)]) + body


def purchase_data(version: int = 1) -> bytes:
    return bytes.fromhex("1A2B3C4D0001000000010620250101120000") + bytes([version, 1]) + CARD


def test_identity_and_key_slots_never_carry_values() -> None:
    card = new_card()
    fci = ok(card.process(bytes.fromhex("00A4040008D15600000150534D")))
    assert fci.endswith(bytes.fromhex("D15600000150534D"))
    assert ok(card.process(bytes.fromhex("00B095000E")))[:10].hex().upper() == SERIAL
    assert ok(card.process(bytes.fromhex("00B0960006"))).hex().upper() == "440100000001"
    chal = authenticate(card)
    ok(card.process(write_key_apdu(chal, 1)))
    info = ok(card.process(bytes.fromhex("80CA000000")))
    assert info[:4] == bytes(4) and info[4] == 8  # transaction serial, capacity
    assert info[5:8] == bytes([1, 1, 1]) and info[8:11] == ecb(PURCHASE, bytes(8))[:3]
    assert PURCHASE not in info and PURCHASE.hex().encode() not in info


def test_mac1_and_mac2_match_an_independent_computation() -> None:
    card = new_card()
    ok(card.process(write_key_apdu(authenticate(card), 1)))
    out = ok(card.process(bytes([0x80, 0x70, 0, 0, 28]) + purchase_data()))
    tsn, mac1 = out[:4], out[4:]
    dpk = pboc_diversify(PURCHASE, CARD)
    sespk = ecb(dpk, bytes.fromhex("1A2B3C4D0001") + tsn[2:])
    tail = bytes.fromhex("0000000106") + bytes.fromhex("440100000001") + bytes.fromhex("20250101120000")
    assert mac1 == cbc_single(sespk, pad(tail))
    mac2 = cbc_single(sespk, pad(bytes.fromhex("00000001")))
    assert card.process(bytes([0x80, 0x72, 0, 0, 4]) + mac2) == b"\x90\x00"
    out2 = ok(card.process(bytes([0x80, 0x70, 0, 0, 28]) + purchase_data()))
    assert int.from_bytes(out2[:4], "big") == int.from_bytes(tsn, "big") + 1  # the PSAM serial counts
    assert card.process(bytes([0x80, 0x72, 0, 0, 4]) + b"\x00" * 4) == b"\x69\x88"


def cbc_single(key8: bytes, data: bytes) -> bytes:
    enc = Cipher(TripleDES(key8 * 3), modes.CBC(bytes(8))).encryptor()
    return (enc.update(data) + enc.finalize())[-8:][:4]


def test_des_init_and_mac_for_other_usages() -> None:
    card = new_card()
    tac = bytes.fromhex("505152535455565758595A5B5C5D5E5F")
    ok(card.process(write_key_apdu(authenticate(card), 1, usage=2, key=tac)))
    ok(card.process(bytes([0x80, 0x1A, 2, 1, 8]) + CARD))
    mac = ok(card.process(bytes([0x80, 0xFA, 5, 0, 4]) + b"DATA"))
    assert mac == cbc(pboc_diversify(tac, CARD), pad(b"DATA"))[-8:][:4]


def test_write_key_refusals() -> None:
    card = new_card()
    assert card.process(write_key_apdu(b"\x00" * 8, 1)) == b"\x69\x82"  # not authenticated
    chal = authenticate(card)
    assert card.process(write_key_apdu(chal, 1, mac_key=MK)) == b"\x69\x88"  # bad MAC ends the session
    assert card.process(write_key_apdu(chal, 2)) == b"\x69\x82"
    chal = authenticate(card)
    assert card.process(write_key_apdu(chal, 1, usage=0x11)) == b"\x6a\x80"  # recharge usage: 第二条(四)
    assert card.process(bytes.fromhex("0082000008") + bytes(8)) == b"\x69\x85"  # no challenge
    full = new_card(Faults(full=True))
    assert full.process(write_key_apdu(authenticate(full), 1)) == b"\x6a\x84"


def test_bad_mac_fault_corrupts_mac1() -> None:
    good, bad = new_card(), new_card(Faults(bad_mac=True))
    for c in (good, bad):
        ok(c.process(write_key_apdu(authenticate(c), 1)))
    a = ok(good.process(bytes([0x80, 0x70, 0, 0, 28]) + purchase_data()))
    b = ok(bad.process(bytes([0x80, 0x70, 0, 0, 28]) + purchase_data()))
    assert a[:4] == b[:4] and a[4:] != b[4:]


def test_state_is_sealed_persistent_and_private(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    st = CardState(SERIAL, "440100000001", MK, tk(), KEK)
    store.save(st)
    card = PsamCard(store.load(SERIAL), store.save)
    ok(card.process(write_key_apdu(authenticate(card), 1)))
    store.flush()
    again = StateStore(tmp_path).load(SERIAL)  # reinsertion after an emulator restart: from the file
    assert [(s.usage, s.version, s.key) for s in again.slots] == [(1, 1, PURCHASE)]
    assert store.load(SERIAL) is card.state  # reinsertion while running: the live state
    for f in tmp_path.iterdir():
        data = f.read_bytes()
        for secret in (PURCHASE, MK, KEK):
            assert (
                secret not in data and secret.hex().encode() not in data and secret.hex().upper().encode() not in data
            )
        assert f.stat().st_mode & 0o077 == 0, f


class FakeVpcd:
    """vpcd's side of the socket for one reader: sends control bytes and APDUs, reads the answers."""

    def __init__(self) -> None:
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.port = self.srv.getsockname()[1]
        self.conn: socket.socket | None = None

    def accept(self) -> None:
        self.srv.settimeout(5)
        self.conn, _ = self.srv.accept()
        self.conn.settimeout(5)

    def send(self, payload: bytes) -> bytes | None:
        assert self.conn is not None
        self.conn.sendall(struct.pack(">H", len(payload)) + payload)
        if len(payload) == 1 and payload[0] != 4:
            return None
        head = self.conn.recv(2)
        if len(head) < 2:
            return b""
        (n,) = struct.unpack(">H", head)
        return self.conn.recv(n)


def test_vpcd_framing_feeder_and_removal(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state")
    for n in (1, 2, 3):
        store.save(CardState(f"4444010000000000000{n}", "440100000001", MK, tk(), KEK))
    store.flush()
    vpcd = FakeVpcd()
    emu = srv.Emulator(tmp_path / "state", [vpcd.port])
    emu.start()
    try:
        emu.op_insert({"sams": [{"serial": "44440100000000000001"}, {"serial": "44440100000000000002"}]})
        emu.op_insert({"sams": [{"serial": "44440100000000000003", "faults": {"remove_after": 2}}]})
        vpcd.accept()
        assert vpcd.send(b"\x04") == ATR
        vpcd.send(b"\x01")
        assert vpcd.send(bytes.fromhex("00B095000E"))[:10].hex() == "44440100000000000001"
        vpcd.send(b"\x00")  # pcscd's own power-down: the SAM stays
        assert vpcd.send(bytes.fromhex("00B095000E"))[:10].hex() == "44440100000000000001"
        vpcd.send(b"\x02")  # the station's reset after APDUs: the machine feeds the next SAM, same socket
        assert vpcd.send(b"\x04") == ATR
        assert vpcd.send(bytes.fromhex("00B095000E"))[:10].hex() == "44440100000000000002"
        vpcd.send(b"\x02")
        assert vpcd.send(bytes.fromhex("00B095000E"))[:10].hex() == "44440100000000000003"
        assert vpcd.send(bytes.fromhex("00B0960006")).hex() == "4401000000019000"
        assert vpcd.send(bytes.fromhex("00B0960006")) == b""  # removed after 2 APDUs: the socket closes
        hist = emu.op_history({})["history"]
        assert [h["outcome"].split()[0] for h in hist] == ["done", "done", "removed"]
    finally:
        emu.stop()


def test_control_socket_round_trip(tmp_path: Path) -> None:
    from tunion_lab.sam_emulator.client import EmulatorClient

    emu = srv.Emulator(tmp_path / "state", [1])  # port 1: nothing listens, the reader just waits
    stop = threading.Event()
    sock = tmp_path / "emu.sock"
    t = threading.Thread(target=srv.serve_control, args=(emu, sock, stop), daemon=True)
    t.start()
    try:
        for _ in range(100):
            if sock.exists():
                break
            threading.Event().wait(0.02)
        assert os.stat(sock).st_mode & 0o077 == 0
        with EmulatorClient(sock) as c:
            assert len(c.manufacturer_key()) > 200
            assert c.call("status")["readers"][0]["queued"] == 0
            with pytest.raises(RuntimeError, match="20 hex digits"):
                c.insert([{"serial": "XYZ"}])
    finally:
        stop.set()
        t.join(2)
