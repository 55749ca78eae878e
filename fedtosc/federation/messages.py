"""The messages the server and the nodes exchange besides Flower's own train round: names and config.

The server owns the resolved config and sends it to every node in the `describe` query, as JSON
in a ConfigRecord; a node's own facts (partition id, optional channel) come from its node config.
"""

from __future__ import annotations

import json

from flwr.app import ConfigRecord

from fedtosc.config import ExperimentConfig, config_to_json

__all__ = ["CONFIG_JSON", "DESCRIBE", "KNOWLEDGE", "config_record"]

DESCRIBE = "query.describe"
KNOWLEDGE = "query.knowledge"
# The key under which the config record holds the resolved config, as JSON.
CONFIG_JSON = "config-json"


def config_record(config: ExperimentConfig) -> ConfigRecord:
    return ConfigRecord({CONFIG_JSON: json.dumps(config_to_json(config))})
