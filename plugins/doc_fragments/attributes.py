# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What every tunion.keymgmt module's documentation shares: authors, first version, and the attributes (every
module runs in check mode; diff mode is ``.full`` or ``.no_diff``).

A module names ``tunion.keymgmt.attributes`` and one of ``tunion.keymgmt.attributes.full`` or
``tunion.keymgmt.attributes.no_diff``; its own ``attributes`` add only the ``details`` of its check mode."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
version_added: 0.1.0
author: tunion-keyops engineers (@tunion-keyops)
options: {}
attributes:
  check_mode:
    description: Can run in check mode and report what it would change without changing it.
    support: full
  diff_mode:
    description: Shows in diff mode what it changes (or would change), never key values, PINs or tokens.
"""

    FULL = r"""
options: {}
attributes:
  diff_mode:
    support: full
"""

    NO_DIFF = r"""
options: {}
attributes:
  diff_mode:
    support: none
    details: The module's return values say what it did; there is no before and after to show.
"""
