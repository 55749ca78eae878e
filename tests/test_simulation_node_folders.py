"""Simulation parity: simulated nodes read their own folders (`fedtosc data split`) as SuperNodes do."""

import json

import pytest

from fedtosc.cli import main
from fedtosc.data.local import read_node_data
from fedtosc.results import read_results

pytestmark = pytest.mark.slow


def test_simulated_nodes_train_on_their_own_folders_with_the_transfer_set_broadcast_once_each(tmp_path, digits_teacher):
    common = ["federation.num_clients=2", "federation.partitioner=pathological", "federation.classes_per_client=3",
              "dataset.label_fraction=0.5", "channel.clients='awgn:5,awgn:15'"]
    assert main(["data", "split", "--out", str(tmp_path / "nodes"), *common]) == 0
    folder_counts = {}
    for node in (0, 1):
        samples = read_node_data(tmp_path / "nodes" / f"node{node}")
        folder_counts[str(node)] = (len(samples), int((samples.labels != "").sum()))
    run_dir = tmp_path / "run"

    code = main(["run", *common, f"output_dir={run_dir}", f"dataset.node_root={tmp_path / 'nodes'}",
                 "knowledge.delivery=transfer_set", *digits_teacher,
                 # Its own store cache: its transfer-set store is built by this run alone, never raced.
                 f"knowledge.cache_dir={tmp_path / 'knowledge'}", "train.local_epochs=1",
                 "federation.rounds=1", "channel.eval_snr_db=[10]"])

    assert code == 0
    results = read_results(run_dir)
    nodes = results["federation"]["nodes"]
    assert {node: (entry["num_examples"], entry["num_labelled"]) for node, entry in nodes.items()} == folder_counts
    assert all("class_counts" not in entry for entry in nodes.values())
    knowledge = results["knowledge"]
    assert knowledge["delivery"] == "transfer_set"
    assert [entry["broadcast_bytes"] for entry in nodes.values()] == [knowledge["payload_bytes"]] * 2
    assert knowledge["broadcast_bytes"] == 2 * knowledge["payload_bytes"]
    clients = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])["clients"]
    transfer = knowledge["num_samples"]  # the store covers exactly the transfer set every node trained on too
    assert sorted(c["num-examples"] for c in clients) == sorted(count + transfer for count, _ in folder_counts.values())
