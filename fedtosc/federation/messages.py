"""The messages the server and the nodes exchange besides Flower's own train round: names and config.

The server owns the resolved config and sends it to every node in the `describe` query, as JSON
in a ConfigRecord; a node's own facts (partition id, optional channel) come from its node config.
"""

from __future__ import annotations

import json

from flwr.app import ConfigRecord

from fedtosc.config import ExperimentConfig, config_to_json

__all__ = ["CONFIG_JSON", "DESCRIBE", "KNOWLEDGE", "REJOINED", "RUN", "RUN_CONFIG", "config_record"]

DESCRIBE = "query.describe"
KNOWLEDGE = "query.knowledge"
# The key under which the config record holds the resolved config, as JSON.
CONFIG_JSON = "config-json"
# The two records that describe the run to a node, and their names in its context state: the resolved
# config, and the run record (classes, input shape, slot, payload fingerprint: `node.RUN_*`). `describe`
# sends them, and every train message carries them again: Flower keeps a run's context in the SuperNode's
# memory only, so a node restarted mid-run has lost them and rejoins from the train message.
RUN_CONFIG, RUN = "run-config", "run"
# A train reply's metric: 1 when the node rejoined that way (from its payload cache), else 0.
REJOINED = "rejoined"


def config_record(config: ExperimentConfig) -> ConfigRecord:
    return ConfigRecord({CONFIG_JSON: json.dumps(config_to_json(config))})
