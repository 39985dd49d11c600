"""The import graph of plugins/module_utils, read with ast (nothing is imported): layers point down, no cycle,
each third-party library stays in its boundary package, no function-level import of project code, and each
module ships only the module_utils it uses (issue 9, Must show 1)."""

from __future__ import annotations

import ast
import sys
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[4]
UTILS = ROOT / "plugins" / "module_utils"
MODULES = ROOT / "plugins" / "modules"
PKG = "ansible_collections.tunion.keymgmt.plugins.module_utils"

LAYERS = {"common": 1, "formats": 2, "pkcs11": 3, "openbao": 3, "pcsc": 3, "registry_store": 3, "flows": 4}
ROOT_LAYER = 5  # base.py, argspec.py: the only files that may import ansible.module_utils
#: third-party import -> the one package of module_utils that may import it
BOUNDARY = {"pkcs11": "pkcs11", "hvac": "openbao", "requests": "openbao", "smartcard": "pcsc"}


def module_name(path: Path) -> str:
    rel = path.relative_to(UTILS).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


FILES = {module_name(p): p for p in sorted(UTILS.rglob("*.py"))}


def layer(name: str) -> int:
    return LAYERS.get(name.split(".", maxsplit=1)[0], ROOT_LAYER)


def _targets(node: ast.ImportFrom) -> list[str]:
    """The module_utils modules a ``from ... import`` of project code names (a module, or names of one)."""
    rest = node.module[len(PKG) :].lstrip(".") if node.module else ""
    out = []
    for alias in node.names:
        candidate = f"{rest}.{alias.name}" if rest else alias.name
        out.append(candidate if candidate in FILES else rest)
    return [t for t in out if t]


@cache
def imports(name: str) -> tuple[frozenset[str], frozenset[str], tuple[str, ...]]:
    """(project modules imported, third-party top-level names imported, function-level project imports)."""
    tree = ast.parse(FILES[name].read_text(encoding="utf-8"))
    project: set[str] = set()
    third: set[str] = set()
    nested: list[str] = []
    top_level = {id(n) for n in tree.body}
    top_level |= {id(n) for stmt in tree.body if isinstance(stmt, ast.Try | ast.With | ast.If) for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(PKG):
            project.update(_targets(node))
            if id(node) not in top_level:
                nested.append(f"line {node.lineno}: from {node.module}")
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            third.add(node.module.split(".")[0] if node.module != "ansible.module_utils.basic" else "ansible")
        elif isinstance(node, ast.Import):
            third.update(a.name.split(".")[0] for a in node.names)
    third -= set(sys.stdlib_module_names) | {"__future__"}
    return frozenset(project), frozenset(third), tuple(nested)


def graph() -> dict[str, frozenset[str]]:
    return {name: imports(name)[0] for name in FILES}


def test_every_import_resolves() -> None:
    unknown = {n: sorted(t for t in deps if t not in FILES) for n, deps in graph().items()}
    assert not {n: u for n, u in unknown.items() if u}


def find_cycles(g: dict[str, frozenset[str]]) -> list[list[str]]:
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(g.get(node, ())):
            if state.get(dep) == 1:
                cycles.append([*path[path.index(dep) :], dep])
            elif dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for start in sorted(g):
        if start not in state:
            visit(start, [start])
    return cycles


def upward(g: dict[str, frozenset[str]]) -> list[str]:
    return [
        f"{name} (layer {layer(name)}) imports {dep} (layer {layer(dep)})"
        for name, deps in sorted(g.items())
        for dep in sorted(deps)
        if layer(dep) > layer(name)
    ]


def test_no_cycle() -> None:
    cycles = find_cycles(graph())
    assert not cycles, "import cycles: " + "; ".join(" -> ".join(c) for c in cycles)


def test_imports_point_down() -> None:
    assert not upward(graph())


def test_third_party_stays_in_its_boundary() -> None:
    wrong = []
    for name in FILES:
        package = name.split(".")[0]
        for lib in imports(name)[1]:
            if lib == "ansible":
                if layer(name) != ROOT_LAYER:
                    wrong.append(f"{name} imports ansible.module_utils (layer 5 only)")
            elif BOUNDARY.get(lib) != package:
                wrong.append(f"{name} imports {lib} (allowed in {BOUNDARY.get(lib, 'no package')}/ only)")
    assert not wrong


def test_no_function_level_import_of_project_code() -> None:
    nested = {name: imports(name)[2] for name in FILES if imports(name)[2]}
    assert not nested


def ships(module: str) -> set[str]:
    """Every module_utils file a module carries (AnsiballZ ships the transitive closure of its imports)."""
    tree = ast.parse((MODULES / f"{module}.py").read_text(encoding="utf-8"))
    todo = [
        t
        for n in ast.walk(tree)
        if isinstance(n, ast.ImportFrom) and (n.module or "").startswith(PKG)
        for t in _targets(n)
    ]
    seen: set[str] = set()
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += imports(name)[0]
    return seen


def packages(names: set[str]) -> set[str]:
    return {n.split(".")[0] for n in names if "." in n}


#: a boundary is shipped only by the modules that check its library (base.TunionModule requires=...)
REQUIREMENT_OF = {
    "pkcs11.session": "PKCS11_REQUIREMENT",
    "openbao.client": "HVAC_REQUIREMENT",
    "pcsc.channel": "PYSCARD",
}


@pytest.mark.parametrize("module", sorted(p.stem for p in MODULES.glob("*.py")))
def test_a_module_ships_a_boundary_only_when_it_needs_its_library(module: str) -> None:
    shipped = ships(module)
    source = (MODULES / f"{module}.py").read_text(encoding="utf-8")
    assert "base" in shipped, f"{module} does not use base.TunionModule"
    for boundary, requirement in REQUIREMENT_OF.items():
        assert (boundary in shipped) == (requirement in source), (
            f"{module}: ships {boundary} = {boundary in shipped}, checks {requirement} = {requirement in source}"
        )


#: what base.TunionModule ships to journal a key operation (docs/journal.md): stdlib only, no boundary library
JOURNAL = {"common.clock", "formats.journal", "flows.journal", "registry_store.journal"}


def test_key_catalogue_validate_ships_no_boundary_code() -> None:
    shipped = ships("key_catalogue_validate")
    assert shipped == {"base", "common.errors", "common.names", "formats.algorithms", "formats.catalogue"} | JOURNAL


def test_openbao_city_access_ships_no_hsm_or_pcsc_code() -> None:
    shipped = ships("openbao_city_access")
    assert shipped - JOURNAL == {
        "argspec",
        "base",
        "common.errors",
        "common.names",  # check_cities: a city name names OpenBao paths, refused before connecting
        "flows.distribution.access",
        "openbao.client",
        "openbao.layout",
    }


def test_the_checks_find_what_they_look_for() -> None:
    """A made-up graph: the cycle and the upward import are both reported."""
    made_up = {
        "common.names": frozenset({"formats.catalogue"}),  # layer 1 importing layer 2
        "formats.catalogue": frozenset({"flows.a"}),
        "flows.a": frozenset({"formats.catalogue"}),  # a cycle
    }
    assert find_cycles(made_up) == [["formats.catalogue", "flows.a", "formats.catalogue"]]
    assert upward(made_up) == [
        "common.names (layer 1) imports formats.catalogue (layer 2)",
        "formats.catalogue (layer 2) imports flows.a (layer 4)",
    ]
    assert layer("base") == layer("argspec") == ROOT_LAYER
