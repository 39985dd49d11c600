"""Split knowledge in the task files (issue 10 item 10): every task through which custodian components pass is
no_log, each custodian's file is read by a lookup of its own, and no fact or play var carries a component."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
TASK_FILES = sorted([*REPO.glob("roles/*/tasks/*.yml"), *REPO.glob("playbooks/*.yml")])
# what a task that handles clear components names: the custodians' files, their directory, a component lookup
COMPONENT_MARK = re.compile(r"custodian_paths|custodian_components|hsm_custodian_dir|custodian-")


def tasks(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, list):
        for item in node:
            yield from tasks(item)
    elif isinstance(node, dict):
        if any(k in node for k in ("hosts", "import_playbook")):  # a play: its tasks and its vars
            for key in ("pre_tasks", "tasks", "post_tasks", "handlers"):
                yield from tasks(node.get(key) or [])
            return
        yield node
        for key in ("block", "rescue", "always"):
            yield from tasks(node.get(key) or [])


def handles_components(task: dict[str, Any]) -> bool:
    """A module given components (the hsm_key option), or a task that names the custodians' files."""
    body = {k: v for k, v in task.items() if k not in ("name", "block", "rescue", "always")}
    given = any(isinstance(args, dict) and "components" in args for args in body.values())
    return given or bool(COMPONENT_MARK.search(yaml.safe_dump(body)))


def test_the_role_reads_components_somewhere() -> None:
    found = [t for f in TASK_FILES for t in tasks(yaml.safe_load(f.read_text())) if handles_components(t)]
    assert found, "no task handles components: the pattern no longer finds the import task"


def test_every_task_that_handles_components_is_no_log() -> None:
    problems = []
    for path in TASK_FILES:
        for task in tasks(yaml.safe_load(path.read_text())):
            if handles_components(task) and task.get("no_log") is not True:
                problems.append(f"{path.relative_to(REPO)}: {task.get('name')!r} handles components without no_log")
    assert problems == []


def test_each_custodian_file_is_read_by_a_lookup_of_its_own_and_never_kept_in_a_fact() -> None:
    text = "\n".join(f.read_text() for f in TASK_FILES)
    # one query over every custodian's file is gone: each lookup names one path
    assert not re.search(r"query\(\s*'ansible\.builtin\.file'\s*,\s*\*", text)
    for path in TASK_FILES:
        for task in tasks(yaml.safe_load(path.read_text())):
            module = next((k for k in task if k.endswith("set_fact")), None)
            if module is not None:
                assert not COMPONENT_MARK.search(yaml.safe_dump(task[module])), f"{path}: a fact carries components"
    for play in (p for f in REPO.glob("playbooks/*.yml") for p in yaml.safe_load(f.read_text()) or []):
        assert not COMPONENT_MARK.search(yaml.safe_dump(play.get("vars") or {})), "a play var carries components"
