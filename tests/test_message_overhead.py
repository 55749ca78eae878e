"""Per-message costs of the federation's hot path: what a describe or train message recomputes."""

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord, ConfigRecord, RecordDict

from fedtosc.channels import entries
from fedtosc.config import load_config
from fedtosc.experiment import experiment_student, load_experiment
from fedtosc.federation import payload_cache
from fedtosc.federation.client_round import run_client_round
from fedtosc.federation.node import client_profile
from fedtosc.federation.node_data import local_data
from fedtosc.federation.payload_cache import save_payload
from fedtosc.federation.payloads import payload_fingerprint


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


def _payload(value: int) -> RecordDict:
    images = np.full((4, 1, 8, 8), value, dtype=np.uint8)
    return RecordDict({"transfer-samples": ArrayRecord({"images": Array(images)}), "header": ConfigRecord({"rows": 4})})


def test_training_reads_the_shared_payload_once_per_process_and_only_for_nodes_whose_cache_holds_it(tmp_path, monkeypatch):
    payload, other = _payload(1), _payload(2)
    fingerprint, other_fingerprint = payload_fingerprint(payload), payload_fingerprint(other)
    for node in ("a", "b"):
        save_payload(tmp_path / node, fingerprint, payload)
    save_payload(tmp_path / "a", other_fingerprint, other)
    monkeypatch.setattr(payload_cache, "_VERIFIED", {})  # nothing verified before this test
    reads = []
    verify = payload_cache.cached_payload
    monkeypatch.setattr(payload_cache, "cached_payload", lambda *args: reads.append(args) or verify(*args))

    first = payload_cache.payload_for_training(tmp_path / "a", fingerprint)
    assert payload_fingerprint(first) == fingerprint and len(reads) == 1
    # Another simulated node in the same actor: its file is there, its contents are not read again.
    assert payload_cache.payload_for_training(tmp_path / "b", fingerprint) is first and len(reads) == 1
    assert payload_cache.payload_for_training(tmp_path / "c", fingerprint) is None  # this node was never sent it
    assert payload_cache.payload_for_training(tmp_path / "a", "") is None
    # A new fingerprint (another run) is read and verified, and replaces the old one.
    assert payload_fingerprint(payload_cache.payload_for_training(tmp_path / "a", other_fingerprint)) == other_fingerprint
    assert len(reads) == 2


def test_training_refuses_a_payload_file_that_does_not_verify(tmp_path, monkeypatch):
    monkeypatch.setattr(payload_cache, "_VERIFIED", {})
    payload = _payload(3)
    fingerprint = payload_fingerprint(payload)
    path = save_payload(tmp_path, fingerprint, payload)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    assert payload_cache.payload_for_training(tmp_path, fingerprint) is None


def test_a_cpu_client_round_seeds_the_cpu_stream_without_queueing_device_seeds(monkeypatch):
    config = load_config(["dataset=digits", "federation.num_clients=4", "knowledge.mode=none", "loss.kd_weight=0",
                          "train.local_epochs=1", "device=cpu"])
    experiment = load_experiment(config)
    torch.manual_seed(0)
    state = experiment_student(experiment, None).state_dict()
    device_seeds = []
    monkeypatch.setattr(torch.cuda, "manual_seed_all", device_seeds.append)  # what torch.manual_seed also calls

    run_client_round(experiment, 2, client_profile(config, 2), local_data(experiment, 2, None), state, 5, torch.device("cpu"))
    # torch.manual_seed's CPU stream (its initial seed is the client's), and no lazy device seeding.
    assert torch.initial_seed() == config.seed * 100_003 + 2 * 1_009 + 5
    assert device_seeds == []
