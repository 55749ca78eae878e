"""fedtosc on an existing Ray cluster (docs/scale-out.md): choosing it, per-client resources, the
placement record, and, on a real two-node Ray cluster on loopback, a run and a knowledge build.

The cluster is started with `ray start` under a temp dir of its own and stopped by the marker in
its processes' environment: `ray stop` would stop every Ray on the machine, and
`ray.cluster_utils.Cluster` records its address in /tmp/ray, where any bare `ray.init()` on the
machine would then join it.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest
from flwr.app import ConfigRecord, RecordDict

from fedtosc.config import ConfigError, load_config
from fedtosc.federation.placement import PLACEMENT, round_placement, total_placement
from fedtosc.launch import free_port, processes_with_env, simulation_resources
from fedtosc.ray_cluster import NodeResources, RayAddressError, client_resources, cluster_address, local_nodes

_MARK = "FEDTOSC_TEST_RAY_CLUSTER"


# ---- choosing the cluster, and what clients ask of it ----------------------------------------


@pytest.mark.parametrize("address", ["auto", "10.0.0.5:6379", "head.example:6379", "[::1]:6379"])
def test_cluster_addresses_are_accepted(address: str) -> None:
    assert load_config([f"ray.address={address!r}"]).ray.address == address


@pytest.mark.parametrize(
    ("address", "says"),
    [("ray://head:10001", "Ray Client"), ("head", "<host>:<port>"), ("head:http", "<host>:<port>"), ("head:70000", "<host>:<port>")],
)
def test_a_bad_cluster_address_is_a_config_error_naming_the_key(address: str, says: str) -> None:
    with pytest.raises(ConfigError, match=f"ray.address: .*{says}"):
        load_config([f"ray.address={address!r}"])


def test_ray_address_environment_variable_is_honoured_and_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert cluster_address(None) == "10.0.0.5:6379"
    assert cluster_address("auto") == "auto"  # the key wins over the environment
    monkeypatch.setenv("RAY_ADDRESS", "local")
    assert cluster_address(None) is None
    monkeypatch.setenv("RAY_ADDRESS", "ray://head:10001")
    with pytest.raises(RayAddressError, match="RAY_ADDRESS"):
        cluster_address(None)


def test_client_gpus_must_be_a_gpu_fraction_or_whole_gpus() -> None:
    assert load_config(["federation.client_gpus=0.25"]).federation.client_gpus == 0.25
    assert load_config(["federation.client_gpus=2"]).federation.client_gpus == 2
    with pytest.raises(ConfigError, match="federation.client_gpus=1.5"):
        load_config(["federation.client_gpus=1.5"])


_TWO_CPUS = [NodeResources(cpus=2, gpus=0)]


def test_a_cpu_fraction_on_a_ray_of_our_own_scales_its_cpu_count() -> None:
    half = client_resources(0.5, None, "auto", _TWO_CPUS, own_ray=True)
    assert (half.cpus, half.gpus, half.ray_num_cpus) == (1, 0.0, 4)  # four clients at once on two cores
    assert "init-args-num-cpus=4" in half.federation_config()
    whole = client_resources(1, None, "auto", _TWO_CPUS, own_ray=True)
    assert (whole.cpus, whole.ray_num_cpus) == (1, None)
    assert "init-args" not in whole.federation_config()


def test_ray_num_cpus_starts_our_own_ray_with_that_many_cpus_and_sets_how_many_clients_train_at_once() -> None:
    one = client_resources(1, None, "auto", local_nodes(1), own_ray=True, own_cpus=1)
    assert (one.cpus, one.ray_num_cpus) == (1, 1)  # one client at a time, in one actor
    assert "init-args-num-cpus=1" in one.federation_config()
    quarter = client_resources(0.25, None, "auto", local_nodes(1), own_ray=True, own_cpus=1)
    assert (quarter.cpus, quarter.ray_num_cpus) == (1, 4)  # four at once on the one CPU
    assert local_nodes(3)[0].cpus == 3
    assert load_config(["ray.num_cpus=1"]).ray.num_cpus == 1


@pytest.mark.parametrize(("overrides", "named"), [
    (["ray.num_cpus=0"], "ray.num_cpus=0 must be at least 1"),
    (["ray.num_cpus=2", "ray.address=127.0.0.1:6379"], "unset one of them"),
    (["ray.num_cpus=1", "federation.client_cpus=2"], "more than ray.num_cpus=1"),
])
def test_a_ray_num_cpus_that_cannot_work_is_refused_naming_the_keys(overrides: list[str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(overrides)


def test_ray_num_cpus_with_a_ray_address_in_the_environment_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    with pytest.raises(ConfigError, match="RAY_ADDRESS=127.0.0.1:6379"):
        simulation_resources(load_config(["ray.num_cpus=1"]))


def test_a_cpu_fraction_on_a_joined_cluster_is_refused_with_the_fix() -> None:
    with pytest.raises(RayAddressError, match=r"ray start --num-cpus.*2 x their cores.*client_cpus=1"):
        client_resources(0.5, None, "auto", _TWO_CPUS, own_ray=False)


def test_clients_use_a_gpu_share_by_default_when_the_cluster_has_gpus() -> None:
    nodes = [NodeResources(cpus=16, gpus=2), NodeResources(cpus=8, gpus=0)]
    assert client_resources(1, None, "auto", nodes, own_ray=False).gpus == 0.125  # 16 slots share 2 GPUs
    assert client_resources(1, None, "cpu", nodes, own_ray=False).gpus == 0.0
    assert client_resources(1, 0.5, "auto", nodes, own_ray=False).gpus == 0.5
    assert client_resources(1, None, "auto", _TWO_CPUS, own_ray=False).gpus == 0.0
    with pytest.raises(RayAddressError, match="no GPUs"):
        client_resources(1, 0.5, "auto", _TWO_CPUS, own_ray=False)


def test_placement_counts_client_rounds_per_node_over_rounds() -> None:
    def reply(node: str, host: str = "box") -> RecordDict:
        return RecordDict({PLACEMENT: ConfigRecord({"ray-node-id": node, "hostname": host})})

    first = round_placement([reply("a"), reply("b"), reply("a"), RecordDict({})])
    assert first == {"box/a": 2, "box/b": 1}
    total = total_placement([first, round_placement([reply("b"), reply("", host="edge")])])
    assert total == {
        "box/a": {"hostname": "box", "ray_node_id": "a", "client_rounds": 2},
        "box/b": {"hostname": "box", "ray_node_id": "b", "client_rounds": 2},
        "edge": {"hostname": "edge", "ray_node_id": None, "client_rounds": 1},
    }


# ---- a real two-node cluster on loopback ------------------------------------------------------


def _loopback_host() -> str | None:
    """A name for 127.0.0.1 that Ray does not rewrite.

    Ray replaces `127.0.0.1` and `localhost` in a cluster address with the machine's interface
    address (services.resolve_ip_for_localhost, meant for multi-machine clusters), where a
    loopback-only cluster does not listen; the host's own name often maps to 127.0.0.1 too.
    """
    for name in (socket.gethostname(), socket.getfqdn()):
        try:
            if name not in ("localhost", "") and socket.gethostbyname(name) == "127.0.0.1":
                return name
        except OSError:
            continue
    return None


def _ray_start(args: list[str], env: dict[str, str], node_marker: str) -> None:
    """`ray start` one node whose processes carry `node_marker`; one more try after a failed start.

    Ray waits a fixed 30 s for a new raylet to register, which a loaded machine can miss; what a
    failed start left is stopped before the retry.
    """
    ray = str(Path(sys.executable).parent / "ray")
    for attempt in range(2):
        # Fixed agent ports: with port 0 the raylet also waits (20 s) for the agents to write theirs.
        ports = [
            f"--node-manager-port={free_port()}", f"--object-manager-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}", f"--dashboard-agent-grpc-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}", f"--metrics-export-port={free_port()}",
        ]
        completed = subprocess.run([ray, "start", *args, *ports, "--num-cpus=1", "--disable-usage-stats"],
                                   env=env | {_MARK: node_marker}, capture_output=True, text=True, timeout=300)
        if completed.returncode == 0:
            return
        _stop_cluster(node_marker)
    raise AssertionError(completed.stdout[-3000:] + completed.stderr[-3000:])


def _cluster_processes(marker: str) -> list[psutil.Process]:
    """The processes whose _MARK starts with `marker` (a cluster, or one of its nodes), and their
    descendants (raylets start agents and workers with environments of their own)."""
    found: dict[int, psutil.Process] = {}
    for process in psutil.process_iter():
        try:
            if process.environ().get(_MARK, "").startswith(marker):
                found[process.pid] = process
                found.update({child.pid: child for child in process.children(recursive=True)})
        except psutil.Error:
            continue  # exited meanwhile, or not ours to read
    return list(found.values())


def _stop_cluster(marker: str) -> None:
    processes = _cluster_processes(marker)
    for process in processes:
        try:
            process.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(processes, timeout=15)
    for process in alive:
        try:
            process.kill()
        except psutil.Error:
            pass


@dataclass(frozen=True)
class LoopbackCluster:
    address: str
    marker: str  # what _MARK in its processes' environment starts with


@pytest.fixture(scope="module")
def loopback_cluster() -> Iterator[LoopbackCluster]:
    """A head and a worker node, one CPU each, listening on loopback only."""
    host = _loopback_host()
    if host is None:
        pytest.skip("no host name other than localhost resolves to 127.0.0.1 here (Ray rewrites 127.0.0.1 and localhost)")
    # Short: Ray's socket paths live under it and must stay within 107 characters.
    temp = Path(tempfile.mkdtemp(prefix="ftray", dir="/tmp"))
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env |= {"RAY_USAGE_STATS_ENABLED": "0"}
    port = free_port()
    try:
        # The head takes 127.0.0.1 as its node address only with Ray's single-machine switch off
        # (else --node-ip-address=127.0.0.1 becomes the interface address); then every server binds loopback.
        _ray_start(["--head", f"--port={port}", "--node-ip-address=127.0.0.1", "--include-dashboard=false",
                    f"--ray-client-server-port={free_port()}", f"--temp-dir={temp}"],
                   env | {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}, f"{temp.name}:head")
        # The worker finds its own address as the one that reaches the head: 127.0.0.1.
        _ray_start([f"--address={host}:{port}"], env, f"{temp.name}:worker")
        yield LoopbackCluster(f"{host}:{port}", temp.name)
    finally:
        _stop_cluster(temp.name)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.fixture(scope="module")
def caches(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One teacher for the module's tests (trained once), and a knowledge cache per build."""
    root = tmp_path_factory.mktemp("ray-caches")
    return {name: root / name for name in ("teachers", "local", "cluster")}


def _overrides(caches: dict[str, Path], knowledge: str) -> list[str]:
    # 16-image batches: the digits distillation set makes several chunks, so several actors work.
    # One teacher epoch: what is compared is where and how the teacher ran, not how good it is.
    return [
        f"teacher.cache_dir={caches['teachers']}", f"knowledge.cache_dir={caches[knowledge]}",
        "teacher.batch_size=16", "teacher.epochs=1",
    ]


def _cluster_state(address: str) -> tuple[list[str], float, float]:
    """(alive node ids, CPUs available, CPUs in all), asked through Ray's public API."""
    import ray

    ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="WARNING")
    try:
        nodes = sorted(node["NodeID"] for node in ray.nodes() if node["Alive"])
        return nodes, ray.available_resources().get("CPU", 0.0), ray.cluster_resources().get("CPU", 0.0)
    finally:
        ray.shutdown()


def _listening_addresses(pids: set[int]) -> set[str]:
    listing = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    found = set()
    for line in listing.splitlines():
        fields = line.split()
        if any(f"pid={pid}," in line for pid in pids):
            found.add(fields[3].rsplit(":", 1)[0])
    return found


@pytest.mark.slow
def test_a_knowledge_build_on_the_cluster_equals_the_local_one(loopback_cluster: LoopbackCluster, caches: dict[str, Path]) -> None:
    from safetensors.numpy import load_file

    from fedtosc.cli import main

    assert main(["knowledge", "build", *_overrides(caches, "local")]) == 0
    assert main(["knowledge", "build", *_overrides(caches, "cluster"), f"ray.address={loopback_cluster.address}"]) == 0
    (local,), (cluster,) = (list(caches[name].glob("*.safetensors")) for name in ("local", "cluster"))
    assert local.name == cluster.name  # the same fingerprint
    local_tensors, cluster_tensors = load_file(str(local)), load_file(str(cluster))
    assert local_tensors.keys() == cluster_tensors.keys()
    for name, array in local_tensors.items():
        assert (array == cluster_tensors[name]).all(), name  # bit for bit: the same batches, the same kernels
    assert not list(caches["cluster"].glob("*.partial"))


@pytest.mark.slow
def test_a_run_on_the_cluster_uses_both_nodes_and_leaves_the_cluster_as_it_was(
    loopback_cluster: LoopbackCluster, caches: dict[str, Path], tmp_path: Path
) -> None:
    from fedtosc.cli import main
    from fedtosc.results import RESULTS_KEYS, read_results

    address = loopback_cluster.address
    nodes, _, cpus = _cluster_state(address)
    assert len(nodes) == 2
    run_dir = tmp_path / "run"
    code = main([
        "run", f"output_dir={run_dir}", *_overrides(caches, "cluster"), f"ray.address={address}",
        "federation.num_clients=4", "federation.rounds=2", "train.local_epochs=1", "channel.eval_snr_db=[10]",
    ])
    assert code == 0
    results = read_results(run_dir)
    assert set(RESULTS_KEYS) <= set(results)
    placement = results["federation"]["placement"]
    assert {entry["ray_node_id"] for entry in placement.values()} == set(nodes)  # client work on both nodes
    assert sum(entry["client_rounds"] for entry in placement.values()) == 4 * 2
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [sum(line["placement"].values()) for line in lines] == [4, 4]
    # Nothing of the run is left: its processes here, and its actors' CPUs on the cluster.
    assert processes_with_env("FLWR_HOME", str(run_dir / ".flwr")) == []
    deadline = time.monotonic() + 60
    while (state := _cluster_state(address))[1] < cpus and time.monotonic() < deadline:
        time.sleep(1)  # Ray ends a finished job's actors asynchronously
    assert state == (nodes, cpus, cpus)  # both nodes still up, every CPU free again
    # Every server the cluster started listens on loopback only.
    pids = {process.pid for process in _cluster_processes(loopback_cluster.marker)}
    assert pids and _listening_addresses(pids) <= {"127.0.0.1", "[::ffff:127.0.0.1]"}
