"""The key hierarchy in the catalogue (docs/key_hierarchy.md): which level each holder receives, refused otherwise."""

from __future__ import annotations

import copy

import pytest
import yaml
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import CatalogueError
from ansible_collections.tunion.keymgmt.plugins.module_utils.formats.catalogue import issuer_factor, load_catalogue

from tunion_lab.lab import REPO

LAB = yaml.safe_load((REPO / "inventories/lab/group_vars/all/key_catalogue.yml").read_text())["key_catalogue"]
PROD = yaml.safe_load((REPO / "inventories/production.example/group_vars/all/key_catalogue.yml").read_text())[
    "key_catalogue"
]


def _with(name: str, **hierarchy):
    cat = copy.deepcopy(LAB)
    entry = next(e for e in cat if e["name"] == name)
    entry["hierarchy"] = dict(entry.get("hierarchy") or {}, **hierarchy)
    return cat


def _refused(cat, *needles):
    with pytest.raises(CatalogueError) as exc:
        load_catalogue(cat)
    text = str(exc.value)
    for n in needles:
        assert n in text
    return text


@pytest.mark.parametrize("cat", [LAB, PROD], ids=["lab", "production.example"])
def test_the_inventories_give_psams_the_ministry_level_purchase_key(cat):
    c = load_catalogue(cat)
    h = c.entry("purchase").hierarchy
    assert (h.province_hsm, h.city_hsm, h.psam, h.path) == ("master", "issuer", "master", ("issuer", "card"))
    assert h.mac1_form == "two-level"
    assert c.entry("purchase").psam_holder("440100") == "province"
    assert c.entry("tac").hierarchy.psam == "none"
    for e in c:
        if e.key_class != "consumption":
            assert e.hierarchy.psam == "none", e.name


def test_defaults_keep_old_catalogues_meaning_the_same():
    cat = copy.deepcopy(LAB)
    for e in cat:
        e.pop("hierarchy", None)
    c = load_catalogue(cat)
    assert c.entry("purchase").hierarchy.mac1_form == "two-level"
    assert c.entry("load").hierarchy.city_hsm == "issuer"
    assert c.entry("load_auth").hierarchy.city_hsm == "master"  # province-wide, used as it is
    assert c.entry("sam_issuer").hierarchy.city_hsm == "none"


def test_closed_scheme_psam_gets_the_issuer_level_and_the_single_level_form():
    c = load_catalogue(_with("purchase", psam="issuer"))
    assert c.entry("purchase").hierarchy.mac1_form == "single-level"
    assert c.entry("purchase").psam_holder("440300") == "city-440300"


@pytest.mark.parametrize("name", ["load", "maintenance", "pin_unlock", "pin_reload", "load_auth"])
@pytest.mark.parametrize("level", ["master", "issuer"])
def test_no_recharge_key_level_goes_to_a_psam(name, level):
    _refused(_with(name, psam=level), "第二条(四)")


@pytest.mark.parametrize("level", ["master", "issuer"])
def test_tac_keys_stay_in_hsms(level):
    cat = _with("tac", psam=level)
    next(e for e in cat if e["name"] == "tac")["holders"] = ["hsm", "sam"]
    _refused(cat, "第十三条")


def test_a_city_never_receives_the_master_of_a_city_scoped_key():
    _refused(_with("purchase", city_hsm="master"), "第十二条")


def test_the_province_holds_the_master():
    _refused(_with("purchase", province_hsm="issuer"), "第六条")


@pytest.mark.parametrize(
    "change",
    [{"path": ["card", "issuer"]}, {"path": "issuer"}, {"issuer_factor": "iin"}, {"psam": "card"}, {"colour": 1}],
)
def test_malformed_hierarchies_are_refused(change):
    _refused(_with("purchase", **change), "hierarchy")


def test_a_psam_level_without_the_card_level_is_refused():
    _refused(_with("purchase", path=[], city_hsm="none"), "down to the card")


@pytest.mark.parametrize("city", ["440100", "440300", "441900", "445300"])
def test_issuer_factor_is_the_city_code_right_aligned(city):
    assert issuer_factor(city) == bytes(5) + bytes.fromhex(city)


@pytest.mark.parametrize("bad", ["4401", "44010a", "", "4401000"])
def test_issuer_factor_refuses_what_is_not_a_city_code(bad):
    with pytest.raises(CatalogueError):
        issuer_factor(bad)
