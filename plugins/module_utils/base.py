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

from collections.abc import Callable, Iterable
from copy import deepcopy
from typing import Any, NoReturn, Protocol, TypeVar

from ansible.module_utils.basic import AnsibleModule, missing_required_lib
from ansible_collections.tunion.keymgmt.plugins.module_utils.common.errors import TunionError

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


class TunionModule(AnsibleModule):
    """An AnsibleModule built from the module's own options and its option groups (own options win)."""

    def __init__(
        self,
        options: Spec,
        *groups: Spec,
        requires: Iterable[Requirement] = (),
        supports_check_mode: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(argument_spec=build(*groups, **options), supports_check_mode=supports_check_mode, **kwargs)
        self._requires = list(requires)
        self._opened: list[Closable] = []

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
        self.exit_json(**result)
        raise AssertionError("exit_json returned")  # pragma: no cover - it exits
