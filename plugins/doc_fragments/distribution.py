# Copyright: tunion-keyops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Options shared by the key distribution modules: the city a city-side module runs for, and the province's list
of city targets."""

from __future__ import annotations


class ModuleDocFragment:
    CITY = r"""
options:
  city:
    description: The city's name (its inventory host name); selects its OpenBao paths C(cities/<city>/...).
    type: str
    required: true
  city_code:
    description: The city's six-digit code; names the key holder C(city-<code>) in the token and must match blocks.
    type: str
    required: true
"""

    TARGETS = r"""
options:
  targets:
    description: One entry per city (playbooks/distribute.yml builds it from each city's C(distribution_target)).
    type: list
    elements: dict
    required: true
    suboptions:
      city:
        description: City name (inventory host name).
        type: str
        required: true
      city_code:
        description: Six-digit city code; goes into every block header.
        type: str
        required: true
      grants:
        description:
          - Granted keys, each C(key_type) and C(version) (default 1), optionally C(not_before)/C(not_after) when
            neither the token nor the catalogue holds the validity period. A bare string is a key type at version 1.
        type: list
        elements: raw
        default: []
      kek_version:
        description: Wanted version of the city's KEK; raise it to rotate.
        type: int
        default: 1
  catalogue:
    description:
      - The key catalogue (C(key_catalogue) in the inventory). Gives the validity period of keys whose dates the
        token cannot return (SoftHSM does not return the dates of private objects).
    type: list
    elements: dict
"""
