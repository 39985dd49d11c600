"""Key catalogue validation: the lab catalogue passes, each rule of 粤交〔2019〕11号 refuses what it should."""

from __future__ import annotations

import copy

import pytest
import yaml
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import CatalogueError
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.catalogue import assert_sam_allowed, load_catalogue

from tunion_lab.lab import REPO

LAB = yaml.safe_load((REPO / "inventories/lab/group_vars/all/key_catalogue.yml").read_text())["key_catalogue"]
PROD = REPO / "inventories/production.example/group_vars/all/key_catalogue.yml"


def _with(**changes):
    cat = copy.deepcopy(LAB)
    name = changes.pop("name")
    entry = next(e for e in cat if e["name"] == name)
    entry.update(changes)
    return cat


def test_lab_catalogue_is_valid():
    cat = load_catalogue(LAB)
    assert [e.name for e in cat.for_sam()] == ["purchase"]
    assert cat.entry("load").label(1, "city-440100") == "recharge.load.v01.city-440100"
    nb, na = cat.validity_for("recharge.load.v01.city-440100")
    assert nb.isoformat() == "2025-01-01" and na.isoformat() == "2030-12-31"


def test_production_example_is_valid():
    load_catalogue(yaml.safe_load(PROD.read_text())["key_catalogue"])


def test_recharge_key_on_sam_is_refused_citing_the_rule():
    with pytest.raises(CatalogueError) as err:
        load_catalogue(_with(name="load", holders=["hsm", "sam"]))
    assert "第二条(四)" in str(err.value) and "'load'" in str(err.value)
    with pytest.raises(CatalogueError, match="第二条"):
        load_catalogue(_with(name="sam_issuer", holders=["hsm", "sam"]))
    with pytest.raises(CatalogueError):
        assert_sam_allowed(load_catalogue(LAB).entry("load"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": "kek"}, "'kek' is a type of the collection's own"),
        ({"name": "transport_rsa", "class": "recharge", "origin": "province"}, "'transport_rsa' is a type"),
        ({"code": 0xF1}, "code 0xf1 is reserved in class internal .*0xf1 kek, 0xf2 transport_rsa"),
        ({"code": 0xF0}, "code 0xf0 is reserved"),
        ({"code": 0xFF}, "code 0xff is reserved"),
    ],
)
def test_the_collection_s_own_types_and_codes_are_refused(changes, message):
    """KEKs and RSA transport keys take reserved internal codes (0xf0..0xff) in their CKA_ID: no catalogue entry may
    take their names or those codes, or two objects would share a label or an ID."""
    cat = copy.deepcopy(LAB)
    entry = next(e for e in cat if e["name"] == "backup_kek")
    entry.update(changes)
    with pytest.raises(CatalogueError, match=message):
        load_catalogue(cat)


def test_reserved_codes_are_free_outside_class_internal():
    load_catalogue(_with(name="load", code=0xF1))


def test_duplicate_type_version_is_refused():
    cat = copy.deepcopy(LAB)
    cat.append(copy.deepcopy(cat[2]))
    with pytest.raises(CatalogueError, match="duplicate key type/version: 'load' version 1"):
        load_catalogue(cat)


def test_unknown_algorithm_and_reversed_validity():
    with pytest.raises(CatalogueError, match="unknown algorithm 'DES'"):
        load_catalogue(_with(name="tac", algorithm="DES"))
    bad = _with(name="load", versions=[{"version": 1, "not_before": "2030-01-01", "not_after": "2025-01-01"}])
    with pytest.raises(CatalogueError, match=r"validity ends \(2025-01-01\) before it starts"):
        load_catalogue(bad)


def test_origins_follow_article_9():
    with pytest.raises(CatalogueError, match="第九条"):
        load_catalogue(_with(name="purchase", origin="province", source="generate"))
    with pytest.raises(CatalogueError, match="第九条"):
        load_catalogue(_with(name="load", origin="ministry", source="components"))


def test_sm4_may_be_declared():
    cat = copy.deepcopy(LAB)
    cat.append(
        {
            "name": "purchase_sm4",
            "class": "consumption",
            "origin": "ministry",
            "algorithm": "SM4",
            "code": 0x13,
            "holders": ["hsm", "sam"],
            "source": "components",
            "versions": [{"version": 1, "not_before": "2025-01-01", "not_after": "2030-12-31"}],
        }
    )
    assert load_catalogue(cat).entry("purchase_sm4").algorithm == "SM4"


def test_every_error_is_reported_at_once():
    cat = _with(name="load", holders=["hsm", "sam"], algorithm="RC4")
    with pytest.raises(CatalogueError) as err:
        load_catalogue(cat)
    assert len(err.value.errors) == 2


@pytest.mark.parametrize("kcv", ["", "AB", "ABCD", "ABCDEF00", "ABCDEF0", "ABCDEG"])
def test_a_declared_kcv_is_exactly_6_hex_digits(kcv):
    ver = {"version": 1, "not_before": "2025-01-01", "not_after": "2030-01-01", "kcv": kcv}
    with pytest.raises(CatalogueError, match="kcv must be exactly 6 hex digits"):
        load_catalogue(_with(name="purchase", versions=[ver]))
    load_catalogue(_with(name="purchase", versions=[dict(ver, kcv="abcdef")]))
