# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The one module base class of tunion.keymgmt (modelled on community.hashi_vault's HashiVaultModule).

:class:`TunionModule` assembles the argument spec from option groups (argspec.py, one per doc fragment), checks the
third-party libraries a module needs with ``missing_required_lib``, turns every :class:`TunionError` into
``fail_json`` with its message (and ``errors`` when it lists several), and releases what the module opened - the
OpenBao login tokens above all - whether the module succeeds or fails. A module body is a function of the module
returning its result::

    def run(module: TunionModule) -> dict[str, Any]: ...

    def main() -> None:
        TunionModule(OWN_OPTIONS, argspec.OPENBAO, requires=[HVAC_REQUIREMENT]).run(run)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from copy import deepcopy
from typing import Any, NoReturn, Protocol, TypeVar

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import JournalError, TunionError
from ansible_collections.tunion.keymgmt.plugins.module_utils.flows.journal import record

#: an argument spec, or one group of options of it (argspec.py)
Spec = dict[str, dict[str, Any]]

#: (library name, imported?, import error): each boundary package exports one (e.g. pkcs11/session.py)
Requirement = tuple[str, bool, "str | None"]


def build(*groups: Spec, **own: dict[str, Any]) -> Spec:
    """One argument spec from option groups and the module's own options. Two groups declaring one name
    differently is a bug (``catalogue`` is in TARGETS and STATUS, the same); a module's own option replaces a
    group's on purpose (``user_pin`` required by hsm_key_info)."""
    spec: Spec = {}
    for group in groups:
        for name, option in group.items():
            if name in spec and spec[name] != option:
                raise ValueError(f"option {name} is declared twice, differently")
            spec[name] = deepcopy(option)
    spec.update(deepcopy(own))
    return spec


class Closable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=Closable)

#: what a module's result says about the keys it changed: one dict per key (label, version, KCV; never a value)
JournalKeys = Callable[[Mapping[str, Any]], list[dict[str, Any]]]


def result_keys(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The default of ``journal_keys``: the key the result names (``label``, ``version``, ``kcv``) and each entry
    of its ``derived`` list that changed."""
    keys = [{k: result[k] for k in ("label", "version", "kcv") if result.get(k) is not None}]
    keys += [
        {k: d[k] for k in ("label", "kcv") if d.get(k) is not None}
        for d in result.get("derived") or []
        if isinstance(d, dict) and d.get("changed")
    ]
    return [k for k in keys if k]


class TunionModule(AnsibleModule):
    """An AnsibleModule built from the module's own options and its option groups (own options win)."""

    def __init__(
        self,
        options: Spec,
        *groups: Spec,
        requires: Iterable[Requirement] = (),
        supports_check_mode: bool = True,
        journal: str | Callable[[Mapping[str, Any]], str] | None = None,
        journal_keys: JournalKeys = result_keys,
        **kwargs: Any,
    ) -> None:
        """``journal`` names the key operation the module performs (formats/journal.py OPERATIONS), or computes it
        from the result (hsm_key: generated, imported or destroyed). A run that changed something, outside check
        mode, then appends one event per key of ``journal_keys(result)`` to the node's journal (docs/journal.md)."""
        super().__init__(argument_spec=build(*groups, **options), supports_check_mode=supports_check_mode, **kwargs)
        self._requires = list(requires)
        self._opened: list[Closable] = []
        self._journal = journal
        self._journal_keys = journal_keys

    def _record(self, result: dict[str, Any]) -> dict[str, Any]:
        """Append the run's events; a journal that cannot be written is a warning and ``journal.error``, since
        the key operation itself is done and re-running it would change nothing (and record nothing)."""
        if self._journal is None or self.check_mode or not result.get("changed"):
            return result
        operation = self._journal(result) if callable(self._journal) else self._journal
        if not operation:
            return result
        groups: dict[str, list[dict[str, Any]]] = {}
        # the key's version from the options when the result does not repeat it (hsm_key)
        for named in self._journal_keys({"version": self.params.get("version"), **result}):
            key = dict(named)
            groups.setdefault(str(key.pop("what", operation)), []).append(key)
        events: list[dict[str, Any]] = []
        try:
            for what, keys in (groups or {operation: []}).items():
                events += record(what, keys, self.params)
        except JournalError as exc:
            self.warn(f"the key operation was done but not journalled: {exc}")
            return dict(result, journal={"error": str(exc)})
        return dict(result, journal={"events": [e["seq"] for e in events], "head": events[-1]["digest"]})

    def fail_json(self, msg: str, **kwargs: Any) -> NoReturn:
        """A module that fails after changing something (sam_inject: some SAMs loaded) still journals what it did."""
        super().fail_json(msg=msg, **(self._record(kwargs) if kwargs.get("changed") else kwargs))
        raise AssertionError("fail_json returned")  # pragma: no cover - it exits

    def opened(self, resource: C) -> C:
        """Remember ``resource`` (an OpenBao connection): it is closed when the module ends, whatever happens."""
        self._opened.append(resource)
        return resource

    def _close(self) -> None:
        while self._opened:
            self._opened.pop().close()

    def run(
        self,
        body: Callable[[TunionModule], dict[str, Any]],
        *,
        failure_extras: Callable[[TunionError], dict[str, Any]] | None = None,
    ) -> NoReturn:
        """Check the libraries, run ``body``, exit with its result; a TunionError ends in fail_json, no traceback.

        ``failure_extras`` adds the module's own keys to a failure (sam_inject: no APDU was sent)."""
        for name, present, error in self._requires:
            if not present:
                self.fail_json(msg=missing_required_lib(name), exception=error)
        try:
            result = body(self)
        except TunionError as exc:
            self._close()
            extra: dict[str, Any] = {"errors": exc.errors} if exc.errors else {}
            extra.update(failure_extras(exc) if failure_extras else {})
            self.fail_json(msg=str(exc), **extra)
        finally:
            self._close()
        self.exit_json(**self._record(result))
        raise AssertionError("exit_json returned")  # pragma: no cover - it exits
