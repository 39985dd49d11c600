"""The test tree reads like the code tree: one way to import helpers, no sys.path edits, unit tests that start no
Ansible command line, lab tooling and benchmarks that import nothing from tests/."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

from tunion_lab.lab import REPO

SUPPORT = {p.stem for p in (REPO / "tests" / "support").glob("*.py")} - {"__init__"}


def python_files(*tops: str) -> Iterator[Path]:
    for top in tops:
        yield from (p for p in (REPO / top).rglob("*.py") if "__pycache__" not in p.parts)


def imported_modules(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


def touches_sys_path(tree: ast.AST) -> bool:
    return any(
        isinstance(node, ast.Attribute)
        and node.attr == "path"
        and isinstance(node.value, ast.Name)
        and node.value.id == "sys"
        for node in ast.walk(tree)
    )


def code_strings(tree: ast.AST) -> Iterator[str]:
    """String constants, parsed too when they are Python code run in a child interpreter."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("top", ["tests", "bench", "tunion_lab"])
def test_no_sys_path_edits(top: str) -> None:
    """pyproject.toml's pythonpath (pytest), bin/bench and CHILD_PYTHONPATH (children) put things on the path."""
    offenders = []
    for path in python_files(top):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        snippets = [tree]
        for text in code_strings(tree):
            if "import" in text and "\n" in text:
                try:
                    snippets.append(ast.parse(text))
                except SyntaxError:
                    continue
        if any(touches_sys_path(t) for t in snippets):
            offenders.append(rel(path))
    assert offenders == []


def test_helpers_are_imported_one_way() -> None:
    """tests.support.<module>, never the bare file name, never conftest: one file is one module object."""
    offenders = []
    for path in python_files("tests", "bench", "tunion_lab"):
        for module in imported_modules(ast.parse(path.read_text(encoding="utf-8"))):
            first = module.split(".")[0]
            if first in SUPPORT | {"conftest"} or module.endswith(".conftest") or first.endswith("_helpers"):
                offenders.append(f"{rel(path)}: {module}")
    assert offenders == []


@pytest.mark.parametrize("top", ["bench", "tunion_lab"])
def test_lab_tooling_and_benchmarks_import_nothing_from_tests(top: str) -> None:
    offenders = []
    for path in python_files(top):
        text = path.read_text(encoding="utf-8")
        modules = list(imported_modules(ast.parse(text)))
        offenders += [f"{rel(path)}: {m}" for m in modules if m == "tests" or m.startswith("tests.")]
        offenders += [f"{rel(path)}: runs a file in tests/" for s in code_strings(ast.parse(text)) if "tests/" in s]
    assert offenders == []


def test_unit_tests_start_no_ansible_command_line() -> None:
    """Unit tests run in process; whatever runs ansible-playbook or ansible belongs in tests/integration."""
    offenders = []
    for path in python_files("tests/unit"):
        if path == Path(__file__):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        if "tunion_lab.playbooks" in set(imported_modules(tree)):
            offenders.append(f"{rel(path)}: imports tunion_lab.playbooks")
        offenders += [
            f"{rel(path)}: {s!r}"
            for s in code_strings(tree)
            if s.split("/")[-1] in {"ansible-playbook", "ansible-inventory", "ansible-galaxy", "molecule"}
            or s.endswith("bin/ansible")
        ]
    assert offenders == []
