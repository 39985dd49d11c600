# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Descriptions of the module attributes every tunion.keymgmt module declares (support levels stay per module)."""

from __future__ import annotations


class ModuleDocFragment:
    DOCUMENTATION = r"""
options: {}
attributes:
  check_mode:
    description: Can run in check mode and report what it would change without changing it.
  diff_mode:
    description: Shows in diff mode what it changes (or would change), never key values, PINs or tokens.
"""
