"""PBOC diversifications per second: the project's HsmToken.derive_pboc vs a bare python-pkcs11 loop, same token.

Run: bin/bench diversify [count]
Both loops derive DK = 3DES(MK, D) || 3DES(MK, ~D) for `count` card numbers as transient session keys and destroy
them. The project's path adds the validity check (cached per handle), parameter packing and error translation.
"""

from __future__ import annotations

import time

from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.params import key_derivation_string_data
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.policy import KeyPolicy
from ansible_collections.tunion.keymgmt.plugins.module_utils.pkcs11.token import hsm_session
from pkcs11 import Attribute, KeyType, Mechanism
from pkcs11.constants import DEFAULT

from tunion_lab.scratch_token import SOFTHSM, USER_PIN, temp_token


def main(count: int) -> None:
    with temp_token("bench"), hsm_session(SOFTHSM, "bench", USER_PIN) as tok:
        mk = tok.generate_secret("3DES-2KEY", "consumption.purchase.v01.province", None, KeyPolicy(token=False))
        cards = [f"{i:016d}" for i in range(count)]

        def project_loop() -> None:
            for card in cards:
                tok.derive_pboc(mk, card).destroy()

        tpl = {
            Attribute.VALUE_LEN: DEFAULT,
            Attribute.TOKEN: False,
            Attribute.SENSITIVE: True,
            Attribute.EXTRACTABLE: False,
            Attribute.ENCRYPT: True,
            Attribute.SIGN: True,
            Attribute.VERIFY: True,
        }

        def bare_loop() -> None:
            for card in cards:
                d = bytes.fromhex(card)
                with key_derivation_string_data(d + bytes(b ^ 0xFF for b in d)) as param:
                    mk.derive_key(
                        KeyType.DES2,
                        128,
                        mechanism=Mechanism.DES3_ECB_ENCRYPT_DATA,
                        mechanism_param=param,
                        template=tpl,
                    ).destroy()

        # Alternate the two loops and keep each one's best of three, so warm-up and drift hit both alike.
        times: dict[str, float] = {"project": float("inf"), "bare": float("inf")}
        for _ in range(3):
            for name, loop in (("bare", bare_loop), ("project", project_loop)):
                t0 = time.perf_counter()
                loop()
                times[name] = min(times[name], time.perf_counter() - t0)
        project, bare = times["project"], times["bare"]

    print(f"diversifications: {count}")
    print(f"project (HsmToken.derive_pboc): {count / project:9.0f} /s  ({project * 1e6 / count:7.1f} us each)")
    print(f"bare python-pkcs11 loop       : {count / bare:9.0f} /s  ({bare * 1e6 / count:7.1f} us each)")
    print(f"ratio project/bare time       : {project / bare:9.2f}")


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", nargs="?", type=int, default=5000, help="card numbers to diversify (default 5000)")
    main(parser.parse_args().count)
