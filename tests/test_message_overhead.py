"""Per-message costs of the federation's hot path: what a describe or train message recomputes."""

import pytest

from fedtosc.channels import entries
from fedtosc.config import load_config
from fedtosc.federation.node import client_profile


def test_a_nodes_profile_parses_the_channel_line_once_per_process(monkeypatch):
    parsed = []
    parse_entry = entries._parse_profile_entry
    monkeypatch.setattr(entries, "_parse_profile_entry", lambda *args: parsed.append(args) or parse_entry(*args))
    entries._parsed_profiles.cache_clear()
    config = load_config(["dataset=digits", "federation.num_clients=1000", "channel.clients='awgn:0~20'", "device=cpu"])

    first = client_profile(config, 0)
    assert len(parsed) == 1000  # the first message parses the whole line...
    profiles = [client_profile(config, slot) for slot in range(1000)]
    assert len(parsed) == 1000  # ...and no later one parses it again
    assert profiles[0] is first and [p.seed for p in profiles] == [config.seed + slot for slot in range(1000)]


def test_cached_profiles_are_not_shared_lists_and_a_bad_line_fails_every_time():
    listed = entries.parse_channel_profiles("awgn:5", 3)
    listed.clear()  # a caller's list is its own
    assert len(entries.parse_channel_profiles("awgn:5", 3)) == 3
    for _ in range(2):
        with pytest.raises(ValueError, match="malformed SNR"):
            entries.parse_channel_profiles("awgn:loud", 3)
