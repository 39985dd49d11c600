"""A small network for the blacklist tests: two cities, four SAMs in the registry, and their statuses."""

from __future__ import annotations

CITIES = {"guangzhou": "440100", "shantou": "440500"}
ROWS = [
    {"serial": "44050000000000000001", "city_code": "440500", "holder": "st-bus", "status": "active"},
    {"serial": "44010000000000000001", "city_code": "440100", "holder": "gz-metro", "status": "active"},
    {"serial": "44010000000000000002", "city_code": "440100", "holder": "gz-agent", "status": "active"},
    {"serial": "44010000000000000003", "city_code": "440100", "holder": "gz-metro", "status": "revoked"},
]


def statuses(**kinds: dict) -> dict:
    base = {"cities": {c: {"status": "active"} for c in CITIES}, "holders": {}, "sams": {}}
    for kind, names in kinds.items():
        base[kind].update(names)
    return base
