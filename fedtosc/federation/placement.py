"""Where a client round ran: the Ray node (simulation) or the machine (a SuperNode), and the tally.

A ClientApp attaches `where_this_runs()` to every train reply; the server counts client rounds
per node in each metrics.jsonl line (`placement`) and sums the lines into results.json's
`federation.placement` (docs/scale-out.md: reading the placement).
"""

from __future__ import annotations

import socket
import sys
from collections import Counter
from collections.abc import Iterable

from flwr.app import ConfigRecord, RecordDict

__all__ = ["PLACEMENT", "node_label", "placement_record", "round_placement", "total_placement"]

PLACEMENT = "placement"  # the ConfigRecord in a train reply


def placement_record() -> ConfigRecord:
    """This process's node: Ray's node id when it runs in a Ray worker (a simulated client), and the host.

    Ray is looked up, not imported: a SuperNode's ClientApp never loads it, and then only the host counts.
    """
    ray = sys.modules.get("ray")
    node_id = ray.get_runtime_context().get_node_id() if ray is not None and ray.is_initialized() else ""
    return ConfigRecord({"ray-node-id": node_id, "hostname": socket.gethostname()})


def node_label(record: ConfigRecord) -> str:
    """One key per node: `<hostname>/<ray node id>` in a simulation (several Ray nodes may share a
    host), the hostname alone for a SuperNode."""
    node_id = str(record.get("ray-node-id", ""))
    hostname = str(record.get("hostname", "?"))
    return f"{hostname}/{node_id}" if node_id else hostname


def round_placement(replies: Iterable[RecordDict]) -> dict[str, int]:
    """Client rounds per node in one round's usable replies (replies without a record are not counted)."""
    return dict(Counter(node_label(reply.config_records[PLACEMENT]) for reply in replies if PLACEMENT in reply.config_records))


def total_placement(rounds: Iterable[dict[str, int]]) -> dict[str, dict]:
    """results.json's `federation.placement`: per node, its host, Ray node id and client rounds, over all rounds."""
    counts: Counter[str] = Counter()
    for placement in rounds:
        counts.update(placement)
    return {
        label: {
            "hostname": label.split("/", 1)[0],
            "ray_node_id": label.split("/", 1)[1] if "/" in label else None,
            "client_rounds": count,
        }
        for label, count in sorted(counts.items())
    }
