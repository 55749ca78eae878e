"""Edge boxes with their own data: a real TLS deployment on loopback where no node has a partition-id.

Each of three SuperNodes reads its own folder (a different class mix, some samples unlabelled);
the server broadcasts its transfer set (samples + knowledge) once per node, the deployment
default. The Federation helper and the certificate/key fixtures are those of test_deployment.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import numpy as np
import pytest

from fedtosc.cli import main
from fedtosc.data.local import read_node_data, sample_digests, write_node_folder
from fedtosc.federation.payload_cache import cached_payload
from fedtosc.federation.payloads import TRANSFER_IMAGES, TRANSFER_SAMPLES
from fedtosc.launch import free_port
from test_deployment import FEDTOSC, PROJECT_ROOT, Federation, _test_env, federation, shared_tmp  # noqa: F401 - fixtures

# node -> (digit classes it holds, channel): three different class mixes, three links
NODES = {"node0": ((0, 1, 2, 3), "awgn:5"), "node1": ((4, 5, 6), "rayleigh:10"), "node2": ((7, 8, 9), "rician:15")}
_PER_CLASS, _UNLABELLED_EVERY = 6, 3  # every third sample of a node carries no label


def _write_folders(root: Path) -> dict[str, Path]:
    """Each node's folder: digits the server does not hold (outside its share of the dataset)."""
    from fedtosc.config import load_config
    from fedtosc.experiment import load_experiment

    experiment = load_experiment(load_config(["knowledge.delivery=transfer_set", "federation.num_clients=3", "channel.clients=awgn:10"]))
    train = experiment.splits.train
    not_the_servers = np.concatenate(experiment.plan.client_indices)
    folders = {}
    for name, (classes, _) in NODES.items():
        rows = np.concatenate([not_the_servers[train.labels[not_the_servers].numpy() == c][:_PER_CLASS] for c in classes])
        labels = ["" if i % _UNLABELLED_EVERY == 0 else train.class_names[int(train.labels[row])] for i, row in enumerate(rows)]
        folders[name] = root / "data" / name
        write_node_folder(folders[name], train.images[rows].numpy(), labels)
    return folders


def _start_node(federation: Federation, name: str, node_config: str) -> subprocess.Popen:
    node_file = federation.root / f"{name}.toml"
    node_file.write_text(
        f'superlink = "{federation.address}"\nroot-certificates = "{federation.certs / "ca.crt"}"\n'
        f'private-key = "{federation.root / "keys" / name}"\nruntime-port = {free_port()}\n\n[node-config]\n{node_config}'
    )
    process = federation.spawn(name, ["supernode", str(node_file), "--state-dir", str(federation.home(name))])
    federation.supernodes[name] = process
    return process


def test_a_box_with_a_corrupt_folder_refuses_to_start_naming_the_file(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    write_node_folder(tmp_path / "data", np.zeros((2, 1, 8, 8), np.uint8), ["0", ""])
    (tmp_path / "data" / "000001.png").write_bytes(b"truncated")
    node_file = tmp_path / "node.toml"
    node_file.write_text('superlink = "127.0.0.1:9"\n[node-config]\ndata-path = "data"\n')

    code = main(["deploy", "supernode", str(node_file), "--insecure", "--state-dir", str(tmp_path / "state")])

    assert code == 2
    assert f"cannot read image {tmp_path / 'data' / '000001.png'}" in capsys.readouterr().err
    assert not (tmp_path / "state").exists()  # it stopped before starting Flower


@pytest.mark.slow
@pytest.mark.timeout(1200)  # a hang guard: on two shared cores under load a run took minutes
def test_boxes_with_their_own_folders_train_and_receive_only_the_servers_transfer_set(
    federation: Federation, shared_tmp: Path  # noqa: F811 - fixtures from test_deployment
) -> None:
    folders = _write_folders(federation.root)
    federation.start_superlink()
    federation.register(*NODES)
    for name, (_, channel) in NODES.items():
        share = "share-class-counts = true\n" if name == "node0" else ""
        _start_node(federation, name, f'data-path = "{folders[name]}"\ncache-dir = "{federation.root / "cache" / name}"\n'
                                      f'channel = "{channel}"\n{share}')
    run_dir = federation.root / "run"

    completed = subprocess.run(
        [*FEDTOSC, "deploy", "run", "--superlink", federation.address, "--root-certificates", str(federation.certs / "ca.crt"),
         "--cli-home", str(federation.home("cli")), "federation.num_clients=3", "federation.rounds=1",
         "channel.clients=awgn:10", "channel.eval_snr_db=[10]", "channel.eval_channels=[awgn]", "teacher.epochs=3",
         "train.local_epochs=1", "device=cpu", "federation.round_timeout_s=180",
         f"teacher.cache_dir={shared_tmp / 'teachers'}", f"knowledge.cache_dir={shared_tmp / 'knowledge'}",
         f"output_dir={run_dir}"],
        cwd=PROJECT_ROOT, env=_test_env(federation.root), capture_output=True, text=True, timeout=1000, check=False,
    )

    assert completed.returncode == 0, completed.stdout[-3000:] + completed.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    knowledge, reported = results["knowledge"], results["federation"]["nodes"]
    assert knowledge["delivery"] == "transfer_set"  # the deployment default
    # Counts match each folder; the server learns no class histogram unless the node allows it.
    profiles = results["federation"]["client_channel_profiles"]
    by_channel = {profiles[slot]: entry for slot, entry in reported.items()}
    expected_profiles = {"node0": "awgn@5dB", "node1": "rayleigh@10dB", "node2": "rician(k=3)@15dB"}
    for name, (classes, _) in NODES.items():
        entry = by_channel[expected_profiles[name]]
        total = len(classes) * _PER_CLASS
        assert (entry["num_examples"], entry["num_labelled"]) == (total, total - len(range(0, total, _UNLABELLED_EVERY)))
        assert ("class_counts" in entry) == (name == "node0")
    counts = json.loads(by_channel["awgn@5dB"]["class_counts"])
    assert [c > 0 for c in counts] == [True] * 4 + [False] * 6
    # Bytes moved match the plan: the same shared payload to each node, once, and nothing else.
    assert [entry["broadcast_bytes"] for entry in reported.values()] == [knowledge["payload_bytes"]] * 3
    assert knowledge["broadcast_bytes"] == 3 * knowledge["payload_bytes"]
    # What each node received holds none of any node's private samples.
    private = {digest.tobytes() for folder in folders.values() for digest in sample_digests(read_node_data(folder).images)}
    for name in NODES:
        fingerprints = [path.stem.removeprefix("payload-") for path in (federation.root / "cache" / name).glob("payload-*.npz")]
        assert len(fingerprints) == 1
        received = cached_payload(federation.root / "cache" / name, fingerprints[0]).array_records[TRANSFER_SAMPLES]
        assert not private & {digest.tobytes() for digest in sample_digests(received[TRANSFER_IMAGES].numpy())}
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [len(entry["clients"]) for entry in rounds] == [3]

    federation.stop()
    assert federation.leftovers() == []


def test_the_app_bundle_carries_only_code_and_conf() -> None:
    import io
    import zipfile

    from flwr.cli.build import build_fab_from_disk

    names = zipfile.ZipFile(io.BytesIO(build_fab_from_disk(PROJECT_ROOT))).namelist()

    assert {name.split("/")[0] for name in names} == {"server", "clients", "fedtosc", "conf", "pyproject.toml", ".info"}
    assert "clients/client_app.py" in names and "conf/config.yaml" in names


def test_a_deployment_defaults_to_transfer_set_delivery_but_a_resumed_run_keeps_its_own() -> None:
    from fedtosc.deployment import deployment_overrides

    assert deployment_overrides(["federation.rounds=2"]) == ["knowledge.delivery=transfer_set", "federation.rounds=2"]
    assert deployment_overrides(["knowledge.delivery=digest"]) == ["knowledge.delivery=digest"]
    assert deployment_overrides(["resume=runs/x", "federation.rounds=4"]) == ["resume=runs/x", "federation.rounds=4"]
