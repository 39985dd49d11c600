"""Molecule's verify step (extensions/molecule/lab/verify.yml) against the lab: it passes on the converged lab, and it
fails, naming the city and the key, when one city's token holds a key whose KCV is not the province's.

The wrong key is planted without the project's code, as an intruder on the city node would: as the city's unix user,
with python-pkcs11 alone, one granted key object is destroyed and a different key is created under the same label
and ID. The lab is restored afterwards (the planted object destroyed, distribute.yml re-installs the city's block).
"""

from __future__ import annotations

import subprocess

import pytest

from tunion_lab.lab import LAB_DIR, REPO, SOFTHSM_LIBRARY
from tunion_lab.lab_state import PIN_DIR, lab_cities
from tunion_lab.playbooks import VENV_BIN, ansible_env, run_playbook

pytestmark = [pytest.mark.lab, pytest.mark.slow]

CITY = "zhuhai"
# A recharge key every lab city is granted (distribution_grants in inventories/lab), labelled as docs/hsm.md says.
LABEL_FORMAT = "recharge.load.v01.city-{code}"

# Runs as a node's unix user on its own token. argv: mode, token label, object label, PKCS#11 library; the user PIN
# on stdin. KCVs are 3DES-ECB over 8 zero bytes, computed in the HSM on a session copy that may encrypt.
#   kcv     print the KCV of the one secret key with that label
#   plant   destroy that key, create a new random 2-key 3DES key with the same label, ID and protection, print
#           "<old KCV> <new KCV>"
#   remove  destroy every secret key with that label, print how many
_TOKEN_SCRIPT = r"""
import sys

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass


def kcv(key):
    probe = key.copy({Attribute.TOKEN: False, Attribute.ENCRYPT: True})
    try:
        return probe.encrypt(bytes(8), mechanism=Mechanism.DES3_ECB)[:3].hex().upper()
    finally:
        probe.destroy()


mode, token_label, label, library = sys.argv[1:5]
token = pkcs11.lib(library).get_token(token_label=token_label)
with token.open(rw=True, user_pin=sys.stdin.read().strip()) as session:
    found = list(session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY, Attribute.LABEL: label}))
    if mode == "remove":
        for obj in found:
            obj.destroy()
        print(len(found))
        sys.exit(0)
    if len(found) != 1:
        sys.exit(f"{len(found)} secret keys labelled {label}, expected one")
    old = found[0]
    if mode == "kcv":
        print(kcv(old))
        sys.exit(0)
    key_id = bytes(old[Attribute.ID] or b"")
    old_kcv = kcv(old)
    old.destroy()
    template = {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.ENCRYPT: True,
        Attribute.DERIVE: True,
    }
    if key_id:
        template[Attribute.ID] = key_id
    new = session.generate_key(KeyType.DES2, label=label, store=True, template=template)
    print(old_kcv, kcv(new))
"""


def in_token(user: str, mode: str, label: str) -> str:
    """Run _TOKEN_SCRIPT as the node's unix user, on its own SoftHSM token (its HOME and softhsm2.conf)."""
    token_label = user.replace("city-", "tunion-", 1)  # city-zhuhai: tunion-zhuhai; tunion-province: itself
    home = LAB_DIR / "nodes" / user
    pin = (PIN_DIR / f"{token_label}.user").read_text().strip()
    script = [str(VENV_BIN / "python"), "-c", _TOKEN_SCRIPT, mode, token_label, label, SOFTHSM_LIBRARY]
    proc = subprocess.run(
        ["/usr/sbin/runuser", "-u", user, "--", *script],
        input=pin,
        capture_output=True,
        text=True,
        env={
            "HOME": str(home),
            "SOFTHSM2_CONF": str(home / ".config" / "softhsm2" / "softhsm2.conf"),
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        },
        cwd="/",
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, f"{mode} {label} as {user} failed: {proc.stderr.strip()[-500:]}"
    return proc.stdout.strip()


def molecule(*args: str) -> subprocess.CompletedProcess[str]:
    """molecule from the repository root, in the environment bin/test gives it, as plain text (no colours, boxes or
    line wrapping) so that its messages can be searched."""
    env = ansible_env(PY_COLORS="0", NO_COLOR="1", COLUMNS="1000")
    return subprocess.run(
        [str(VENV_BIN / "molecule"), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=900, check=False
    )


def molecule_verify() -> subprocess.CompletedProcess[str]:
    molecule("reset", "-s", "lab")
    return molecule("verify", "-s", "lab")


def failed_hosts(output: str) -> list[str]:
    return sorted(
        {line.split("[", 1)[1].split("]", 1)[0] for line in output.splitlines() if line.startswith("fatal: [")}
    )


def restore(city: str, label: str) -> None:
    """Destroy the planted object; the city's block is still in OpenBao, and a forced installation pass for that city
    (distribute.yml limited to the province and the city) puts the province's key back."""
    in_token(f"city-{city}", "remove", label)
    result = run_playbook("distribute.yml", "--limit", f"province,{city}", "-e", "distribution_verify_cities=true")
    assert result.returncode == 0, f"restoring {city} failed:\n{result.stdout[-3000:]}\n{result.stderr[-2000:]}"


def assert_verify_passes() -> None:
    result = molecule_verify()
    assert result.returncode == 0, f"molecule verify failed:\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}"
    assert failed_hosts(result.stdout) == []
    # every city node was checked over SSH and said so
    for city in lab_cities():
        assert f'"msg": "{city}: ' in result.stdout, city


def test_verify_passes_on_the_converged_lab() -> None:
    assert_verify_passes()


def test_verify_fails_on_a_planted_wrong_kcv_and_passes_after_the_restore() -> None:
    label = LABEL_FORMAT.format(code=lab_cities()[CITY])
    # the province's KCV of the key it publishes for the city, read from its own token
    province_kcv = in_token("tunion-province", "kcv", label)
    try:
        held_kcv, planted_kcv = in_token(f"city-{CITY}", "plant", label).split()
        assert held_kcv == province_kcv, "the city was out of step before the planting"
        assert planted_kcv != province_kcv  # a fresh random key: a collision is one in 2**24
        result = molecule_verify()
        assert result.returncode != 0, f"verify passed with a wrong key in {CITY}:\n{result.stdout[-4000:]}"
        # only that city fails, and its message names the city, the key and both KCVs
        assert failed_hosts(result.stdout) == [CITY], result.stdout[-4000:]
        expected = f"{CITY}: 1 problem(s): {label} has KCV {planted_kcv}, the province's is {province_kcv}"
        assert expected in result.stdout, result.stdout[-4000:]
    finally:
        restore(CITY, label)
    assert_verify_passes()
