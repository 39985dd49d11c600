# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""pcsc/channel.py without a reader: the APDUs each profile command puts on the wire, answers checked by length
and status word, and a trace that withholds the loading channel's data unless asked for."""

from __future__ import annotations

import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import CardGone, StatusWordError
from ansible_collections.tunion.keymgmt.plugins.module_utils.pcsc.channel import SamChannel


class Scripted(SamChannel):
    """A channel whose card answers from a script; records what was sent."""

    def __init__(self, answers: list[bytes], trace: list[str] | None = None, trace_channel: bool = False) -> None:
        super().__init__("R0", None, 0, trace, trace_channel)
        self.answers = list(answers)
        self.sent: list[bytes] = []

    def _exchange(self, apdu: bytes, what: str) -> list[int]:
        self.sent.append(apdu)
        return list(self.answers.pop(0))


OK = b"\x90\x00"
HOST = bytes.fromhex("0102030405060708")


def test_initialize_update_sends_the_host_challenge_and_splits_the_answer() -> None:
    ch = Scripted([b"C" * 8 + b"K" * 8 + OK])
    assert ch.initialize_update(HOST) == (b"C" * 8, b"K" * 8)
    assert ch.sent == [bytes.fromhex("8050000008") + HOST]


@pytest.mark.parametrize("length", [0, 8, 15, 17])
def test_a_garbled_initialize_update_answer_is_never_taken(length: int) -> None:
    with pytest.raises(CardGone):
        Scripted([bytes(length) + OK]).initialize_update(HOST)


def test_trace_withholds_the_channel_data_unless_asked() -> None:
    for flag, shown in ((False, False), (True, True)):
        trace: list[str] = []
        ch = Scripted([b"C" * 8 + b"K" * 8 + OK, OK, OK], trace, flag)
        ch.initialize_update(HOST)
        ch.external_authenticate(b"H" * 16)
        ch.write_key(bytes.fromhex("84D4010226") + b"W" * 38, "WRITE KEY")
        text = "\n".join(trace)
        for secret in (
            HOST.hex().upper(),
            (b"C" * 8).hex().upper(),
            (b"H" * 8).hex().upper(),
            (b"W" * 8).hex().upper(),
        ):
            assert (secret in text) is shown, (flag, secret)
        assert "8050000008" in text and "8482000010" in text and "84D4010226" in text


def test_public_commands_stay_in_the_trace() -> None:
    trace: list[str] = []
    Scripted([bytes(8) + OK], trace).mac1(bytes(36))
    assert trace[0] == "R0 > 8070000024" + "00" * 36 and trace[1] == "R0 < " + "00" * 8 + "9000"


@pytest.mark.parametrize("n", [28, 36])
def test_mac1_forms(n: int) -> None:
    ch = Scripted([b"T" * 4 + b"M" * 4 + OK])
    assert ch.mac1(bytes(n)) == (b"T" * 4, b"M" * 4)
    assert ch.sent[0][:5] == bytes([0x80, 0x70, 0, 0, n])


@pytest.mark.parametrize("n", [0, 27, 29, 35, 37])
def test_mac1_of_another_length_is_never_sent(n: int) -> None:
    ch = Scripted([])
    with pytest.raises(Exception, match="36"):
        ch.mac1(bytes(n))
    assert ch.sent == []


def test_mac2_accepted_refused_or_error() -> None:
    assert Scripted([OK]).mac2(b"1234") is True
    assert Scripted([b"\x69\x88"]).mac2(b"1234") is False
    with pytest.raises(StatusWordError):
        Scripted([b"\x69\x85"]).mac2(b"1234")


@pytest.mark.parametrize("factors", [bytes(8), bytes(16)])
@pytest.mark.parametrize("data", [b"", b"A", b"ABCDEFG", b"ABCDEFGH"])
def test_des_mac_sends_the_levels_and_the_initial_value_then_the_padded_message(factors: bytes, data: bytes) -> None:
    iv = bytes.fromhex("1A2B3C4D00000000")
    ch = Scripted([OK, b"MMMM" + OK])
    assert ch.des_mac(2, 1, factors, data, iv) == b"MMMM"
    assert ch.sent[0] == bytes([0x80, 0x1A, 2, 1, len(factors)]) + factors
    body = ch.sent[1][5:]
    assert ch.sent[1][:4] == bytes.fromhex("80FA0500") and ch.sent[1][4] == len(body)
    assert body[:8] == iv and body[8 : 8 + len(data)] == data and body[8 + len(data)] == 0x80
    assert len(body) % 8 == 0 and set(body[9 + len(data) :]) <= {0}
