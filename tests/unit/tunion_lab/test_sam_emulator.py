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
CARD = bytes.fromhex("FFFF440100000001")
#: issuer factors of three issuers: the SAM's city, another Guangdong city, Beijing
ISSUERS = [bytes.fromhex(f"0000000000{c}") for c in ("440100", "440300", "110000")]


def cbc(key16: bytes, data: bytes, iv: bytes = bytes(8), decrypt: bool = False) -> bytes:
    c = Cipher(TripleDES(key16 + key16[:8]), modes.CBC(iv))
    op = c.decryptor() if decrypt else c.encryptor()
    return op.update(data) + op.finalize()


def ecb(key: bytes, data: bytes) -> bytes:
    k = key * 3 if len(key) == 8 else key + key[:8]
    enc = Cipher(TripleDES(k), modes.ECB()).encryptor()
    return enc.update(data) + enc.finalize()


def pad(data: bytes) -> bytes:
    data += b"\x80"
    return data + bytes(-len(data) % 8)


def mac8(key16: bytes, data: bytes, icv: bytes = bytes(8)) -> bytes:
    return cbc(key16, pad(data), icv)[-8:]


class Host:
    """The station's side of the loading channel, computed independently with `cryptography`."""

    def __init__(self, card: PsamCard, mk: bytes = MK) -> None:
        self.card, self.mk = card, mk
        self.icv = bytes(8)
        self.n = 0
        self.enc = self.mac = self.dek = bytes(16)  # before INITIALIZE UPDATE: keys the card does not share

    def initialize_update(self, host: bytes | None = None) -> tuple[bytes, bytes]:
        self.host = host or os.urandom(8)
        out = ok(self.card.process(bytes.fromhex("8050000008") + self.host))
        self.card_chal, card_crypto = out[:8], out[8:]
        h, c = self.host, self.card_chal
        sk = ecb(self.mk, h[:4] + c[:4] + h[4:] + c[4:])
        self.enc, self.mac, self.dek = (pboc_diversify(sk, k) for k in (b"TU-S-ENC", b"TU-S-MAC", b"TU-S-DEK"))
        return self.card_chal, card_crypto

    def cmac(self, header: bytes, body: bytes) -> bytes:
        self.icv = mac8(self.mac, header + body, self.icv)
        return self.icv

    def external_authenticate(self) -> bytes:
        hc = mac8(self.enc, self.card_chal + self.host)
        return self.card.process(bytes.fromhex("8482000010") + hc + self.cmac(bytes.fromhex("8482000010"), hc))

    def authenticate(self) -> Host:
        card_chal, card_crypto = self.initialize_update()
        assert card_crypto == mac8(self.enc, self.host + card_chal)  # the card proves itself first
        assert ok(self.external_authenticate()) == b""
        return self

    def write_key(self, usage: int = 1, key: bytes = PURCHASE, levels: int = 2, version: int = 1) -> bytes:
        self.n += 1
        header = bytes([usage, version, 1]) + ecb(key, bytes(8))[:3]
        iv = ecb(self.dek, self.n.to_bytes(8, "big"))
        body = header + cbc(self.dek, aes_key_wrap(KEK, key), iv)
        hdr = bytes([0x84, 0xD4, 1, levels, len(body) + 8])
        return hdr + body + self.cmac(hdr, body)


def new_card(faults: Faults | None = None, saved: list | None = None) -> PsamCard:
    st = CardState(SERIAL, "440100000001", MK, KEK)
    return PsamCard(st, (saved.append if saved is not None else lambda s: None), faults)


def ok(resp: bytes) -> bytes:
    assert resp[-2:] == b"\x90\x00", resp.hex()
    return resp[:-2]


def loaded(levels: int = 2, **kw) -> PsamCard:
    card = new_card(**kw)
    host = Host(card).authenticate()
    ok(card.process(host.write_key(levels=levels)))
    return card


def purchase_data(factors: bytes, version: int = 1) -> bytes:
    return bytes.fromhex("1A2B3C4D0001000000010620250101120000") + bytes([version, 1]) + factors


def cbc_single(key8: bytes, data: bytes) -> bytes:
    enc = Cipher(TripleDES(key8 * 3), modes.CBC(bytes(8))).encryptor()
    return (enc.update(data) + enc.finalize())[-8:][:4]


def test_identity_and_key_slots_never_carry_values() -> None:
    card = new_card()
    fci = ok(card.process(bytes.fromhex("00A4040008D15600000150534D")))
    assert fci.endswith(bytes.fromhex("D15600000150534D"))
    assert ok(card.process(bytes.fromhex("00B095000E")))[:10].hex().upper() == SERIAL
    assert ok(card.process(bytes.fromhex("00B0960006"))).hex().upper() == "440100000001"
    host = Host(card).authenticate()
    ok(card.process(host.write_key()))
    info = ok(card.process(bytes.fromhex("80CA000000")))
    assert info[:4] == bytes(4) and info[4] == 8  # transaction serial, capacity
    assert info[5:8] == bytes([1, 1, 1]) and info[8:11] == ecb(PURCHASE, bytes(8))[:3]
    assert PURCHASE not in info and PURCHASE.hex().encode() not in info


@pytest.mark.parametrize("issuer", ISSUERS, ids=["own-city", "other-guangdong-city", "outside-guangdong"])
def test_two_level_mac1_and_mac2_match_an_independent_computation(issuer: bytes) -> None:
    """80 70 00 00 24: the Ministry-level key, diversified by the issuer factor, then the card serial."""
    card = loaded(levels=2)
    out = ok(card.process(bytes([0x80, 0x70, 0, 0, 0x24]) + purchase_data(CARD + issuer)))
    tsn, mac1 = out[:4], out[4:]
    dpk = pboc_diversify(pboc_diversify(PURCHASE, issuer), CARD)
    sespk = ecb(dpk, bytes.fromhex("1A2B3C4D0001") + tsn[2:])
    tail = bytes.fromhex("0000000106") + bytes.fromhex("440100000001") + bytes.fromhex("20250101120000")
    assert mac1 == cbc_single(sespk, pad(tail))
    mac2 = cbc_single(sespk, pad(bytes.fromhex("00000001")))
    assert card.process(bytes([0x80, 0x72, 0, 0, 4]) + mac2) == b"\x90\x00"
    out2 = ok(card.process(bytes([0x80, 0x70, 0, 0, 0x24]) + purchase_data(CARD + issuer)))
    assert int.from_bytes(out2[:4], "big") == int.from_bytes(tsn, "big") + 1  # the PSAM serial counts
    assert card.process(bytes([0x80, 0x72, 0, 0, 4]) + b"\x00" * 4) == b"\x69\x88"


def test_single_level_mac1_for_a_closed_scheme_issuer_key() -> None:
    city_key = pboc_diversify(PURCHASE, ISSUERS[0])
    card = new_card()
    host = Host(card).authenticate()
    ok(card.process(host.write_key(key=city_key, levels=1)))
    out = ok(card.process(bytes([0x80, 0x70, 0, 0, 0x1C]) + purchase_data(CARD)))
    sespk = ecb(pboc_diversify(city_key, CARD), bytes.fromhex("1A2B3C4D0001") + out[2:4])
    tail = bytes.fromhex("0000000106440100000001") + bytes.fromhex("20250101120000")
    assert out[4:] == cbc_single(sespk, pad(tail))
    # the form must match the key's level: an issuer key given an issuer factor, a master without one, are refused
    assert card.process(bytes([0x80, 0x70, 0, 0, 0x24]) + purchase_data(CARD + ISSUERS[0])) == b"\x6a\x80"
    master = loaded(levels=2)
    assert master.process(bytes([0x80, 0x70, 0, 0, 0x1C]) + purchase_data(CARD)) == b"\x6a\x80"


@pytest.mark.parametrize("issuer", ISSUERS)
@pytest.mark.parametrize("iv", [bytes(8), bytes.fromhex("1A2B3C4D00000000")])
def test_des_init_with_two_levels_and_mac_with_its_initial_value(issuer: bytes, iv: bytes) -> None:
    """80 1A carries card serial then issuer factor; 80 FA 05 00 carries the initial value, then the padded data."""
    card = new_card()
    tac = bytes.fromhex("505152535455565758595A5B5C5D5E5F")
    ok(card.process(Host(card).authenticate().write_key(usage=2, key=tac)))
    ok(card.process(bytes([0x80, 0x1A, 2, 1, 16]) + CARD + issuer))
    msg = pad(b"DATA-TO-MAC")
    mac = ok(card.process(bytes([0x80, 0xFA, 5, 0, 8 + len(msg)]) + iv + msg))
    assert mac == cbc(pboc_diversify(pboc_diversify(tac, issuer), CARD), msg, iv)[-8:][:4]
    assert card.process(bytes([0x80, 0x1A, 2, 1, 8]) + CARD) == b"\x6a\x80"  # one level short of the card key


def test_a_public_example_of_the_two_level_form_is_accepted() -> None:
    """The public JT/T 978 terminal form: 36 bytes, card serial then issuer factor (city code || FF 00..)."""
    card = loaded(levels=2)
    factor = bytes.fromhex("4401FF0000000000")
    out = ok(card.process(bytes.fromhex("8070000024" + "1A2B3C4D00010000000109202501011200000101") + CARD + factor))
    sespk = ecb(pboc_diversify(pboc_diversify(PURCHASE, factor), CARD), bytes.fromhex("1A2B3C4D0001") + out[2:4])
    tail = bytes.fromhex("0000000109440100000001") + bytes.fromhex("20250101120000")
    assert out[4:] == cbc_single(sespk, pad(tail))


def test_loading_channel_refusals() -> None:
    card = new_card()
    host = Host(card)
    assert card.process(host.write_key()) == b"\x69\x82"  # not authenticated
    assert card.process(bytes.fromhex("8482000010") + bytes(16)) == b"\x69\x85"  # no INITIALIZE UPDATE
    host = Host(card).authenticate()
    wk = bytearray(host.write_key())
    wk[-1] ^= 1
    assert card.process(bytes(wk)) == b"\x69\x88"  # a bad C-MAC ends the session
    assert card.process(host.write_key()) == b"\x69\x82"
    host = Host(card).authenticate()
    assert card.process(host.write_key(usage=0x11)) == b"\x6a\x80"  # recharge usage: 第二条(四)
    full = new_card(Faults(full=True))
    assert full.process(Host(full).authenticate().write_key()) == b"\x6a\x84"


def test_a_host_without_the_master_key_is_refused() -> None:
    card = new_card()
    wrong = Host(card, mk=bytes(16))
    wrong.initialize_update()
    assert wrong.external_authenticate() in (b"\x69\x88", b"\x63\x00")  # its C-MAC or its cryptogram
    assert card.process(wrong.write_key()) == b"\x69\x82"


def test_a_replayed_write_key_is_refused_and_cryptograms_never_repeat() -> None:
    card = new_card()
    a = Host(card).authenticate()
    first = a.write_key()
    ok(card.process(first))
    assert card.process(first) == b"\x69\x88"  # the C-MAC chain moved on
    b = Host(card).authenticate()
    second = b.write_key()
    ok(card.process(second))
    assert first[5:35] != second[5:35]  # the same key, loaded twice: another cryptogram


def test_bad_mac_fault_corrupts_mac1() -> None:
    good, bad = loaded(), loaded(faults=Faults(bad_mac=True))
    a = ok(good.process(bytes([0x80, 0x70, 0, 0, 0x24]) + purchase_data(CARD + ISSUERS[0])))
    b = ok(bad.process(bytes([0x80, 0x70, 0, 0, 0x24]) + purchase_data(CARD + ISSUERS[0])))
    assert a[:4] == b[:4] and a[4:] != b[4:]


def test_state_is_sealed_persistent_and_private(tmp_path: Path) -> None:
    store = StateStore(tmp_path)
    st = CardState(SERIAL, "440100000001", MK, KEK)
    store.save(st)
    card = PsamCard(store.load(SERIAL), store.save)
    ok(card.process(Host(card).authenticate().write_key()))
    store.flush()
    again = StateStore(tmp_path).load(SERIAL)  # reinsertion after an emulator restart: from the file
    assert [(s.usage, s.version, s.key, s.levels) for s in again.slots] == [(1, 1, PURCHASE, 2)]
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
        store.save(CardState(f"4444010000000000000{n}", "440100000001", MK, KEK))
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
