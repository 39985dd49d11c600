"""Must show 2: a city's AppRole reaches only its own paths; secret_ids are single-use and arrive wrapped."""

from __future__ import annotations

import base64
from collections.abc import Iterator

import hvac
import hvac.exceptions
import pytest
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import OpenBaoError
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.client import OpenBaoSettings, connect
from ansible_collections.tunion.keymgmt.plugins.module_utils.openbao.layout import OpenBaoLayout

from tunion_lab.openbao_access import (
    CA_CERT,
    MOUNT,
    OPENBAO_URL,
    city_login,
    province_client,
    unwrap,
    wrapped_secret_id,
)
from tunion_lab.playbooks import run_ansible

pytestmark = pytest.mark.lab
CITY_A, CITY_B = "guangzhou", "shenzhen"


@pytest.fixture(scope="module")
def province() -> Iterator[hvac.Client]:
    result = run_ansible(
        "ansible",
        "province-hsm",
        "-m",
        "tunion.keymgmt.openbao_city_access",
        "-a",
        "url={{ openbao_addr }} ca_cert={{ openbao_ca_cert }} cities={{ groups['cities'] }}",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    client = province_client()
    kv = client.secrets.kv.v2
    probe = f"cities/{CITY_B}/blocks/isolation_probe.v01"
    kv.create_or_update_secret(probe, {"block": "probe"}, mount_point=MOUNT)
    kv.create_or_update_secret("province/isolation_probe", {"note": "province only"}, mount_point=MOUNT)
    yield client
    # the probe is not a key block: leave nothing a city would try to install
    kv.delete_metadata_and_all_versions(probe, mount_point=MOUNT)
    kv.delete_metadata_and_all_versions("province/isolation_probe", mount_point=MOUNT)


def test_province_token_is_not_root(province: hvac.Client) -> None:
    policies = province.auth.token.lookup_self()["data"]["policies"]
    assert "root" not in policies and "province-admin" in policies


def test_city_reads_its_own_paths_only(province: hvac.Client) -> None:
    a, _, _ = city_login(province, CITY_A)
    kv = a.secrets.kv.v2
    status = f"cities/{CITY_A}/status"
    before = kv.read_secret_version(status, mount_point=MOUNT, raise_on_deleted_version=True)["data"]["data"]
    kv.create_or_update_secret(status, before, mount_point=MOUNT)  # its own status: writable (same content)
    forbidden = [
        lambda: kv.read_secret_version(
            f"cities/{CITY_B}/blocks/isolation_probe.v01", mount_point=MOUNT, raise_on_deleted_version=True
        ),
        lambda: kv.list_secrets(f"cities/{CITY_B}/blocks", mount_point=MOUNT),
        lambda: kv.read_secret_version(f"cities/{CITY_B}/status", mount_point=MOUNT, raise_on_deleted_version=True),
        lambda: kv.create_or_update_secret(f"cities/{CITY_B}/status", {"x": 1}, mount_point=MOUNT),
        lambda: kv.create_or_update_secret(f"cities/{CITY_A}/blocks/forged.v01", {"block": "x"}, mount_point=MOUNT),
        lambda: kv.create_or_update_secret(f"cities/{CITY_A}/kek", {"x": 1}, mount_point=MOUNT),
        lambda: kv.read_secret_version("province/isolation_probe", mount_point=MOUNT, raise_on_deleted_version=True),
        lambda: kv.create_or_update_secret("province/isolation_probe", {"x": 1}, mount_point=MOUNT),
        lambda: kv.delete_metadata_and_all_versions(f"cities/{CITY_A}/blocks/isolation_probe.v01", mount_point=MOUNT),
        lambda: a.sys.create_or_update_acl_policy(f"city-{CITY_A}", 'path "*" { capabilities = ["read"] }'),
        lambda: a.auth.approle.generate_secret_id(f"city-{CITY_B}"),
    ]
    for attempt in forbidden:
        with pytest.raises(hvac.exceptions.Forbidden):
            attempt()
    a.auth.token.revoke_self()


def test_secret_id_is_single_use(province: hvac.Client) -> None:
    _, role_id, secret_id = city_login(province, CITY_A)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="invalid"):
        hvac.Client(url=OPENBAO_URL, verify=CA_CERT).auth.approle.login(role_id=role_id, secret_id=secret_id)


def test_wrapping_token_is_single_use_and_interception_is_reported(province: hvac.Client) -> None:
    role_id, wrapped = wrapped_secret_id(province, CITY_A)
    unwrap(wrapped)  # the "interceptor" unwraps first
    settings = OpenBaoSettings(
        url=OPENBAO_URL,
        ca_cert=CA_CERT,
        auth_method="approle",
        role_name=f"city-{CITY_A}",
        role_id=role_id,
        wrapped_secret_id=wrapped,
    )
    with pytest.raises(OpenBaoError, match=r"already unwrapped|intercepted") as caught:
        connect(settings)
    assert wrapped not in str(caught.value) and role_id not in str(caught.value)


def test_wrapped_secret_id_of_another_city_is_refused(province: hvac.Client) -> None:
    role_id_a, _ = wrapped_secret_id(province, CITY_A)
    _, wrapped_b = wrapped_secret_id(province, CITY_B)
    settings = OpenBaoSettings(
        url=OPENBAO_URL,
        ca_cert=CA_CERT,
        auth_method="approle",
        role_name=f"city-{CITY_A}",
        role_id=role_id_a,
        wrapped_secret_id=wrapped_b,
    )
    with pytest.raises(OpenBaoError, match=r"not 'auth/approle/role/city-guangzhou/secret-id'"):
        connect(settings)


def test_city_policy_is_least_privilege(province: hvac.Client) -> None:
    policy = province.sys.read_acl_policy(f"city-{CITY_A}")["data"]["policy"]
    assert policy == OpenBaoLayout().city_policy_hcl(CITY_A)
    role = province.auth.approle.read_role(f"city-{CITY_A}")["data"]
    assert role["secret_id_num_uses"] == 1 and role["token_policies"] == [f"city-{CITY_A}"]
    assert role["secret_id_ttl"] <= 600 and role["token_no_default_policy"] is True


def test_city_identity_cannot_overwrite_its_enrolment(province: hvac.Client) -> None:
    """Issue 10 item 8: the enrolment is written once. With only its own AppRole credential (hvac, no project code),
    a city identity cannot replace, patch or delete its published public key - the attack of putting an attacker's
    RSA key in front of the province is refused by OpenBao, and the record is unchanged."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    path = f"cities/{CITY_A}/enrolment"
    kv = province.secrets.kv.v2
    try:
        before = kv.read_secret_metadata(path, mount_point=MOUNT)["data"]
    except hvac.exceptions.InvalidPath:
        pytest.skip(f"{CITY_A} is not enrolled in the lab right now")
    before_data = kv.read_secret_version(path, mount_point=MOUNT, raise_on_deleted_version=True)["data"]["data"]
    attacker = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    forged = dict(
        before_data,
        public_key=base64.b64encode(
            attacker.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.PKCS1)
        ).decode(),
        fingerprint="0" * 16,
    )
    a, _, _ = city_login(province, CITY_A)
    ckv = a.secrets.kv.v2
    attempts = [
        lambda: ckv.create_or_update_secret(path, forged, mount_point=MOUNT),
        lambda: ckv.create_or_update_secret(path, forged, cas=before["current_version"], mount_point=MOUNT),
        lambda: ckv.create_or_update_secret(path, forged, cas=0, mount_point=MOUNT),
        lambda: ckv.patch(path, {"public_key": forged["public_key"]}, mount_point=MOUNT),
        lambda: ckv.delete_latest_version_of_secret(path, mount_point=MOUNT),
        lambda: ckv.delete_secret_versions(path, [before["current_version"]], mount_point=MOUNT),
        lambda: ckv.destroy_secret_versions(path, [before["current_version"]], mount_point=MOUNT),
        lambda: ckv.delete_metadata_and_all_versions(path, mount_point=MOUNT),
        lambda: ckv.update_metadata(path, max_versions=1, mount_point=MOUNT),
    ]
    try:
        for attempt in attempts:
            with pytest.raises(hvac.exceptions.Forbidden):
                attempt()
    finally:
        a.auth.token.revoke_self()
    after = kv.read_secret_metadata(path, mount_point=MOUNT)["data"]
    assert after["current_version"] == before["current_version"] and after["versions"] == before["versions"]
    assert kv.read_secret_version(path, mount_point=MOUNT, raise_on_deleted_version=True)["data"]["data"] == before_data
