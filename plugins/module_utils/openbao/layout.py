# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The OpenBao layout of the collection: the ONE owner of the KV v2 mount and of every path and name in it.

* ``cities/<city>/enrolment``     city writes once (create only): its RSA public key (PKCS#1 DER, base64), fingerprint
* ``cities/<city>/kek``           province writes: the city KEK wrapped under that public key (RSA-OAEP)
* ``cities/<city>/blocks/<type>.v<VV>``  province writes: one key block (formats/keyblock.py)
* ``cities/<city>/status``        city writes: the KCVs it installed, per key type and version
* ``province/...``                province only: statuses, KEK statuses, rotations, the SAM blacklist, the
  enforcement state

Each city has a policy and an AppRole named ``city-<city>`` (docs/distribution.md). Every module that talks to
OpenBao takes the ``mount`` option (default ``tunion-kb``) and builds its paths from one :class:`OpenBaoLayout`.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_MOUNT = "tunion-kb"
#: where the province keeps its OpenBao token on its host (auth_method=token without a token option)
DEFAULT_TOKEN_PATH = "~/.openbao/token"  # noqa: S105 - a file name, not a secret


@dataclass(frozen=True)
class OpenBaoLayout:
    """Paths inside the KV v2 mount ``mount`` (relative to it, as hvac wants them) and the names of city access."""

    mount: str = DEFAULT_MOUNT

    status: str = "province/status"
    kek_status: str = "province/kek-status"
    rotation: str = "province/rotation"
    blacklist: str = "province/blacklist"
    enforcement_state: str = "province/enforcement/state"

    @staticmethod
    def role_name(city: str) -> str:
        """The city's AppRole and policy name."""
        return f"city-{city}"

    policy_name = role_name

    @staticmethod
    def city(city: str, leaf: str = "") -> str:
        """``cities/<city>`` or ``cities/<city>/<leaf>``."""
        return f"cities/{city}/{leaf}" if leaf else f"cities/{city}"

    def status_of(self, kind: str, name: str = "") -> str:
        return f"{self.status}/{kind}/{name}" if name else f"{self.status}/{kind}"

    def city_policy_hcl(self, city: str) -> str:
        """Least privilege for one city: its enrolment (write once) and status; KEK envelope and blocks read-only."""
        base = f"{self.mount}/data/{self.city(city)}"
        meta = f"{self.mount}/metadata/{self.city(city, 'blocks')}"
        return (
            f"# {self.role_name(city)}: written by tunion.keymgmt.openbao_city_access\n"
            # create only: the first enrolment writes it; a city identity can never overwrite, patch or delete it
            # (KV v2 answers a write to an existing path as "update"); only the province clears it to re-enrol
            f'path "{base}/enrolment" {{ capabilities = ["create", "read"] }}\n'
            f'path "{base}/status" {{ capabilities = ["create", "update", "read"] }}\n'
            f'path "{base}/kek" {{ capabilities = ["read"] }}\n'
            f'path "{base}/blocks/*" {{ capabilities = ["read"] }}\n'
            f'path "{meta}" {{ capabilities = ["list"] }}\n'
            f'path "{meta}/" {{ capabilities = ["list"] }}\n'
            "# no default policy: only what a task needs to check and drop its own token\n"
            'path "auth/token/lookup-self" { capabilities = ["read"] }\n'
            'path "auth/token/revoke-self" { capabilities = ["update"] }\n'
        )
