"""Deliberate client faults for resilience tests and demos (`federation.inject_faults`).

"crash:1@2" makes partition 1 raise during round 2's training; "nan:0@1" makes partition 0
return NaN weights in round 1. The server must survive both: crashes count as failures and
NaN updates are rejected by screening, never averaged in.
"""

from __future__ import annotations

import re

__all__ = ["FAULT_KINDS", "InjectedCrash", "fault_for", "parse_faults"]

FAULT_KINDS = ("crash", "nan")
_ENTRY = re.compile(r"^(crash|nan):(\d+)@(\d+)$")


class InjectedCrash(RuntimeError):
    """Raised on purpose by a client, as configured by federation.inject_faults."""


def parse_faults(spec: str) -> dict[tuple[int, int], str]:
    """(partition, round) -> fault kind; ValueError naming a malformed entry."""
    faults: dict[tuple[int, int], str] = {}
    for entry in filter(None, (part.strip() for part in spec.split(","))):
        match = _ENTRY.match(entry)
        if match is None:
            raise ValueError(f"fault entry {entry!r} is not '<kind>:<partition>@<round>' with kind in {list(FAULT_KINDS)}")
        faults[(int(match[2]), int(match[3]))] = match[1]
    return faults


def fault_for(spec: str, partition_id: int, server_round: int) -> str | None:
    return parse_faults(spec).get((partition_id, server_round))
