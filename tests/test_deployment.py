"""A real Flower deployment on loopback: SuperLink with TLS and SuperNode auth, SuperNodes as processes.

Each SuperNode gets its own FLWR_HOME, as it would on its own edge box; that marker is also how we
find (and kill) everything it started. Pinned to flwr 1.42 (HTTP transport, one SuperLink port).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import made_once, session_dir

from fedtosc.deployment import (
    load_node_settings,
    make_certificates,
    make_node_key,
    superlink_command,
    supernode_command,
)
from fedtosc.launch import free_port, offline_flower_env, processes_with_env, signal_process, wait_healthy

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FEDTOSC = [sys.executable, "-m", "fedtosc.cli"]
# A run's `channel.clients`, one entry per node (the first ones, as many as a test runs nodes).
SERVER_CHANNELS = ("awgn:5", "rician:15", "rayleigh:10", "awgn:20")
# Node 1 overrides the server's line (k=5, not 3): the node's own config must win.
NODE_CHANNELS = ("awgn:5", "rician:15:k=5", "rayleigh:10", "awgn:20")
EXPECTED_PROFILES = {"0": "awgn@5dB", "1": "rician(k=5)@15dB"}
# The hang guard for one federated run, set-up included (pytest-timeout, and the subprocess waits).
# A run takes about 150 s alone on two idle cores, but under `make test` four xdist workers share
# them: several 3-node federations at once, each ClientApp a fresh process, stretch it several-fold.
_ONE_RUN_LIMIT_S = 1800


def _flwr_version_is_pinned_one() -> None:
    import flwr

    assert flwr.__version__.startswith("1.42."), f"deployment flags are tested against flwr 1.42 only, not {flwr.__version__}"


@dataclass
class Federation:
    """One SuperLink and its SuperNodes, each a `fedtosc deploy ...` process with its own FLWR_HOME."""

    root: Path
    address: str
    certs: Path
    superlink: subprocess.Popen | None = None
    supernodes: dict[str, subprocess.Popen] = field(default_factory=dict)
    frozen: list[str] = field(default_factory=list)

    def home(self, name: str) -> Path:
        return self.root / "homes" / name

    def homes(self) -> list[Path]:
        return sorted((self.root / "homes").glob("*"))

    def log(self, name: str) -> Path:
        return self.root / f"{name}.log"

    def spawn(self, name: str, arguments: list[str]) -> subprocess.Popen:
        # Appended, so a restarted daemon's log follows its first life's.
        with self.log(name).open("a") as log:
            return subprocess.Popen([*FEDTOSC, "deploy", *arguments], cwd=PROJECT_ROOT, env=_test_env(self.root),
                                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def start_superlink(self) -> None:
        port = self.address.rsplit(":", 1)[1]
        self.superlink = self.spawn("superlink", ["superlink", "--certs", str(self.certs), "--host", "127.0.0.1",
                                                  "--port", port, "--state-dir", str(self.home("superlink"))])
        # The limit only turns a hang into a failure: a loaded machine can take minutes to start Python.
        wait_healthy(self.address, _ONE_RUN_LIMIT_S, ca_certificate=self.certs / "ca.crt", process=self.superlink,
                     hint=f"see {self.log('superlink')}")

    def register(self, *names: str) -> None:
        keys = [str(self.root / "keys" / f"{name}.pub") for name in names]
        subprocess.run([*FEDTOSC, "deploy", "register", "--superlink", self.address, "--root-certificates",
                        str(self.certs / "ca.crt"), "--cli-home", str(self.home("cli")), *keys],
                       cwd=PROJECT_ROOT, env=_test_env(self.root), check=True, capture_output=True, text=True)

    def start_supernode(self, name: str, partition_id: int, channel: str) -> subprocess.Popen:
        node_file = self.root / f"{name}.toml"
        node_file.write_text(
            f'superlink = "{self.address}"\nroot-certificates = "{self.certs / "ca.crt"}"\n'
            f'private-key = "{self.root / "keys" / name}"\nruntime-port = {free_port()}\n\n'
            f'[node-config]\npartition-id = {partition_id}\nchannel = "{channel}"\n'
        )
        process = self.spawn(name, ["supernode", str(node_file), "--state-dir", str(self.home(name))])
        self.supernodes[name] = process
        return process

    def daemon(self, name: str) -> subprocess.Popen:
        """The `fedtosc deploy ...` process of one box: "superlink" or a SuperNode's name."""
        process = self.superlink if name == "superlink" else self.supernodes[name]
        assert process is not None, f"{name} was never started"
        return process

    def crash(self, name: str) -> None:
        """Power loss on one box: SIGKILL its daemon and everything it started, no goodbye."""
        self.daemon(name).kill()
        for pid in processes_with_env("FLWR_HOME", str(self.home(name))):
            signal_process(pid, signal.SIGKILL)
        self.daemon(name).wait(timeout=10)

    def freeze(self, name: str) -> None:
        """A hung box: SIGSTOP everything it runs (Flower daemon, SuperExec, ClientApps); nothing exits."""
        self.frozen.append(name)
        for pid in processes_with_env("FLWR_HOME", str(self.home(name))):
            signal_process(pid, signal.SIGSTOP)

    def stop(self) -> None:
        """Ctrl-C equivalent for every daemon: each `fedtosc deploy` process stops its own children."""
        for name in self.frozen:  # a stopped process acts on SIGTERM only once continued
            for pid in processes_with_env("FLWR_HOME", str(self.home(name))):
                signal_process(pid, signal.SIGCONT)
        daemons = [*self.supernodes.values(), *([self.superlink] if self.superlink else [])]
        for process in daemons:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
        for process in daemons:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def leftovers(self) -> list[int]:
        return [pid for home in self.homes() for pid in processes_with_env("FLWR_HOME", str(home))]

    def kill_leftovers(self) -> None:
        for pid in self.leftovers():
            signal_process(pid, signal.SIGKILL)


def _test_env(root: Path) -> dict[str, str]:
    # The fedtosc processes themselves are marked too, so nothing of a test can outlive it unseen.
    return offline_flower_env(root / "homes" / "launcher")


def test_deployment_commands_use_tls_and_node_auth_unless_insecure_is_explicit(tmp_path: Path) -> None:
    node_file = tmp_path / "node0.toml"
    node_file.write_text('superlink = "10.0.0.1:9091"\n[node-config]\npartition-id = 0\nchannel = "rayleigh:10"\n')
    with pytest.raises(ValueError, match="root-certificates"):
        load_node_settings(node_file)
    insecure_node = supernode_command(load_node_settings(node_file, insecure=True))
    assert "--insecure" in insecure_node and "--auth-supernode-private-key" not in insecure_node
    assert 'channel="rayleigh:10"' in insecure_node[insecure_node.index("--node-config") + 1]

    node_file.write_text('superlink = "10.0.0.1:9091"\nroot-certificates = "ca.crt"\nprivate-key = "node0"\n'
                         '[node-config]\npartition-id = 0\n')
    secure_node = supernode_command(load_node_settings(node_file))
    assert "--insecure" not in secure_node
    assert secure_node[secure_node.index("--root-certificates") + 1] == str(tmp_path / "ca.crt")
    assert secure_node[secure_node.index("--auth-supernode-private-key") + 1] == str(tmp_path / "node0")

    secure_link = superlink_command(tmp_path, database="state.db")
    assert "--insecure" not in secure_link and "--enable-supernode-auth" in secure_link
    assert secure_link[secure_link.index("--ssl-certfile") + 1] == str(tmp_path / "server.pem")
    assert "--insecure" in superlink_command(None, node_auth=False, database="state.db")


def test_server_certificate_is_signed_by_the_ca_and_names_loopback(tmp_path: Path) -> None:
    from cryptography import x509

    files = make_certificates(tmp_path, ["server.example.org", "203.0.113.10"])
    ca = x509.load_pem_x509_certificate(files.ca_certificate.read_bytes())
    server = x509.load_pem_x509_certificate(files.server_certificate.read_bytes())
    server.verify_directly_issued_by(ca)
    names = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert set(names.get_values_for_type(x509.DNSName)) == {"server.example.org", "localhost"}
    assert {str(ip) for ip in names.get_values_for_type(x509.IPAddress)} == {"203.0.113.10", "127.0.0.1"}
    assert files.ca_key.stat().st_mode & 0o077 == 0


def test_node_key_is_a_p384_key_in_the_formats_flower_reads(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.hazmat.primitives.serialization import load_ssh_private_key, load_ssh_public_key

    private_path, public_path = make_node_key(tmp_path, "node0")
    private_key = load_ssh_private_key(private_path.read_bytes(), None)
    public_key = load_ssh_public_key(public_path.read_bytes())
    assert isinstance(private_key, ec.EllipticCurvePrivateKey) and private_key.curve.name == "secp384r1"
    assert private_key.public_key().public_numbers() == public_key.public_numbers()


@pytest.fixture(scope="module")
def shared_tmp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Certificates and node keys, made once for all tests here (the teacher and knowledge caches
    are the session's, `digits_teacher`: a test that needs no teacher does not wait for one).

    Under pytest-xdist (`make test`) the workers share them too: the first worker makes them
    under a lock in the session's base folder, the others wait and reuse them.
    """
    _flwr_version_is_pinned_one()
    root = session_dir(tmp_path_factory, "deployment")
    with made_once(root) as missing:
        if missing:
            make_certificates(root / "certs", ["127.0.0.1"])
            for name in ("node0", "node1", "node2", "node3", "rogue"):
                make_node_key(root / "keys", name)
    return root


@pytest.fixture
def federation(shared_tmp: Path, tmp_path: Path):  # noqa: ANN201
    (tmp_path / "keys").symlink_to(shared_tmp / "keys")
    running = Federation(root=tmp_path, address=f"127.0.0.1:{free_port()}", certs=shared_tmp / "certs")
    try:
        yield running
    finally:
        running.stop()
        running.kill_leftovers()


def _overrides(teacher: list[str], run_dir: Path, *extra: str, nodes: int) -> list[str]:
    """`teacher`: the session's teacher and knowledge cache (`digits_teacher`)."""
    return [
        f"federation.num_clients={nodes}", "federation.rounds=2", f"channel.clients='{','.join(SERVER_CHANNELS[:nodes])}'",
        # No claim here depends on how well the student learns: one local epoch and one evaluation SNR
        # keep each train and evaluation short (the final sweep still covers every client link).
        "train.local_epochs=1", "channel.eval_snr_db=[10]", "device=cpu", *teacher,
        # Runs start while their SuperNodes are still starting (the two start-ups overlap), and on a
        # loaded machine a node can take minutes to connect; the ServerApp's wait ends as soon as all
        # have, so this limit only turns a node that never comes into a failure.
        f"federation.connect_timeout_s={_ONE_RUN_LIMIT_S}",
        f"output_dir={run_dir}", *extra,
        # These nodes hold partitions of the server's dataset; the transfer-set default of a deployment
        # (boxes with their own data) is tested in test_deployment_node_data.py.
        "knowledge.delivery=partition",
    ]


def _start_nodes(federation: Federation, nodes: int) -> None:
    """Register nodes 0..nodes-1 and start them, each on its partition and channel."""
    names = [f"node{partition_id}" for partition_id in range(nodes)]
    federation.register(*names)
    for partition_id, name in enumerate(names):
        federation.start_supernode(name, partition_id, NODE_CHANNELS[partition_id])


def _start_federation_and_run(federation: Federation, overrides: list[str], nodes: int) -> subprocess.Popen:
    """The SuperLink, then `fedtosc deploy run` and the SuperNodes side by side: the run's preparation
    (config, cached teacher and store, FAB, ServerApp start-up) overlaps the nodes' registration and
    start-up, and the ServerApp waits until all have connected."""
    federation.start_superlink()
    run = _deploy_run(federation, overrides)
    _start_nodes(federation, nodes)
    return run


@pytest.mark.slow
@pytest.mark.timeout(_ONE_RUN_LIMIT_S)
def test_two_supernodes_over_tls_run_two_rounds_and_leave_no_process(federation: Federation, digits_teacher: list[str]) -> None:
    """The manual path (`fedtosc deploy prepare`, then `flwr run`), each node on its own channel, one
    of them overriding the server's line. Two nodes show all of it; a third would only add its
    processes (a SuperNode and a ClientApp per message, each importing torch, Flower and Sionna)."""
    run_dir = federation.root / "run"
    # Preparing the run needs no SuperLink: it goes on while the federation starts.
    prepare = subprocess.Popen([*FEDTOSC, "deploy", "prepare", *_overrides(digits_teacher, run_dir, nodes=2)],
                               cwd=PROJECT_ROOT, env=_test_env(federation.root))
    federation.start_superlink()
    _start_nodes(federation, nodes=2)
    assert prepare.wait(timeout=_ONE_RUN_LIMIT_S) == 0
    cli_home = federation.home("cli")  # written by `fedtosc deploy register`: TLS, trusting our CA
    assert "root-certificates" in (cli_home / "config.toml").read_text()

    completed = subprocess.run(
        ["flwr", "run", str(PROJECT_ROOT), "fedtosc", "--stream", "--run-config", f'run-dir="{run_dir}"'],
        cwd=PROJECT_ROOT, env=offline_flower_env(cli_home), timeout=_ONE_RUN_LIMIT_S, check=False,
    )

    assert completed.returncode == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert results["federation"]["rounds"] == 2
    assert results["federation"]["client_channel_profiles"] == EXPECTED_PROFILES
    rounds = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [entry["round"] for entry in rounds] == [1, 2]
    assert all(len(entry["clients"]) == 2 for entry in rounds)
    assert set(results["accuracy_vs_snr"]) == {"awgn", "rayleigh"}

    federation.stop()
    assert all(process.returncode is not None for process in federation.supernodes.values())
    assert federation.leftovers() == []


@pytest.mark.slow
@pytest.mark.timeout(_ONE_RUN_LIMIT_S)
def test_supernode_with_unregistered_key_is_refused(federation: Federation) -> None:
    federation.start_superlink()
    federation.register("node0")
    rogue = federation.start_supernode("rogue", 0, "awgn:5")

    exit_code = rogue.wait(timeout=_ONE_RUN_LIMIT_S)  # a hang guard, no timing claim

    assert exit_code == 1  # what the shell sees: Flower logs its own code (305) and exits 1
    assert "Failed to activate SuperNode" in federation.log("rogue").read_text()
    assert "No SuperNode found with the given public key" in federation.log("superlink").read_text()
    assert processes_with_env("FLWR_HOME", str(federation.home("rogue"))) == []


def _deploy_run(federation: Federation, overrides: list[str]) -> subprocess.Popen:
    """`fedtosc deploy run` against the federation, its output in a pipe.

    Its CLI home is its own: it may run while `fedtosc deploy register` rewrites the "cli" one.
    """
    return subprocess.Popen(
        [*FEDTOSC, "deploy", "run", "--superlink", federation.address, "--root-certificates",
         str(federation.certs / "ca.crt"), "--cli-home", str(federation.home("run-cli")), *overrides],
        cwd=PROJECT_ROOT, env=_test_env(federation.root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _wait_for(condition: Callable[[], bool], what: str, timeout_s: float = _ONE_RUN_LIMIT_S) -> None:
    """Poll `condition`; the limit only turns a hang into a failure, it is no timing claim."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {timeout_s:.0f} s")
        time.sleep(0.2)


@pytest.mark.slow
@pytest.mark.timeout(_ONE_RUN_LIMIT_S)
def test_run_finishes_with_the_others_when_a_supernode_dies_and_another_hangs(
    federation: Federation, digits_teacher: list[str]
) -> None:
    """Four nodes; after receiving its knowledge node 2 is killed (SIGKILL) and node 3 hangs
    (SIGSTOP of all it runs): rounds go on with nodes 0 and 1.

    Both lost nodes stop heartbeating, and each one's slot in round 1 ends one of two ways, both
    accepted: Flower 1.42 reports it "Node Unavailable" once its heartbeat expires (2 x 30 s), or
    federation.round_timeout_s passes first and the server records "no reply". The server rejects
    those slots and aggregates the two real replies. A later round samples a lost node again only
    while the SuperLink still counts it online, and then rejects it the same way; with the defaults
    a round needs half its sampled nodes, rounded up (2 of 4), so every round goes on with two.
    The two faults share one run, so their heartbeat waits overlap: each slot is named by node id.
    """
    run_dir = federation.root / "run"
    run = _start_federation_and_run(federation, _overrides(digits_teacher, run_dir, nodes=4), nodes=4)
    output = []
    for line in run.stdout:
        output.append(line)
        if "knowledge broadcast" in line:
            federation.crash("node2")
            federation.freeze("node3")
            break
    else:
        pytest.fail("the run ended before its knowledge broadcast:\n" + "".join(output[-40:]))
    output += run.stdout.readlines()
    exit_code = run.wait(timeout=_ONE_RUN_LIMIT_S)
    (federation.root / "run.log").write_text("".join(output))

    assert exit_code == 0, "".join(output[-40:])
    rounds = _metrics(run_dir)
    assert [entry["round"] for entry in rounds] == [1, 2]
    assert [sorted(client["partition-id"] for client in entry["clients"]) for entry in rounds] == [[0, 1], [0, 1]]
    lost_nodes = {_node_id(federation, "node2"), _node_id(federation, "node3")}
    assert sorted(rejected["node-id"] for rejected in rounds[0]["rejected"]) == sorted(lost_nodes)
    assert len(rounds[1]["rejected"]) <= 2
    lost_slots = [rejected for entry in rounds for rejected in entry["rejected"]]
    assert {rejected["node-id"] for rejected in lost_slots} == lost_nodes
    assert all("Node Unavailable" in rejected["problem"] or "no reply" in rejected["problem"] for rejected in lost_slots)
    assert json.loads((run_dir / "results.json").read_text())["federation"]["rounds"] == 2
    # Killed stays dead; hung stays alive (teardown continues and stops it).
    assert federation.daemon("node2").poll() is not None
    assert federation.daemon("node3").poll() is None


def _node_id(federation: Federation, name: str) -> int:
    """The node id the SuperLink gave this SuperNode, from the node's own log."""
    found = re.search(r"SuperNode ID: (\d+)", federation.log(name).read_text())
    assert found, f"{name} logged no node id"
    return int(found.group(1))


@pytest.mark.slow
@pytest.mark.timeout(2 * _ONE_RUN_LIMIT_S)  # two runs, one after the other
def test_deploy_run_resumes_from_its_checkpoint_after_the_superlink_restarts(
    federation: Federation, digits_teacher: list[str]
) -> None:
    """The server box's SuperLink dies once round 1 is checkpointed and comes back on the same port
    and state directory. The SuperNodes, never restarted, reconnect by themselves (the node
    registrations are in the SuperLink's database), and `fedtosc deploy run resume=<run dir>`
    finishes the run from the checkpoint without running round 1 again.

    The SuperLink is killed within a poll of the checkpoint appearing, long before round 2 can
    finish: that needs a new ClientApp process on every node and their local training.

    Two SuperNodes show that every node comes back (a third only adds its processes to both runs):
    a round needs one of two, so a node that never reconnected would leave round 2 one client short.
    """
    from server.checkpoint import load_checkpoint

    run_dir = federation.root / "run"
    interrupted = _start_federation_and_run(federation, _overrides(digits_teacher, run_dir, nodes=2), nodes=2)
    _wait_for(lambda: (run_dir / "checkpoint.safetensors").is_file() or interrupted.poll() is not None,
              "checkpoint")
    federation.crash("superlink")
    interrupted_output, _ = interrupted.communicate(timeout=_ONE_RUN_LIMIT_S)
    (federation.root / "interrupted.log").write_text(interrupted_output)
    checkpointed_round, _ = load_checkpoint(run_dir)
    checkpointed_lines = (run_dir / "metrics.jsonl").read_text().splitlines()[:checkpointed_round]

    assert interrupted.returncode == 1, interrupted_output[-3000:]
    assert f"fedtosc deploy run resume={run_dir}" in interrupted_output
    assert checkpointed_round == 1
    nodes_before = {name: process.pid for name, process in federation.supernodes.items()}

    federation.start_superlink()
    resumed = _deploy_run(federation, [f"resume={run_dir}"])
    resumed_output, _ = resumed.communicate(timeout=_ONE_RUN_LIMIT_S)
    (federation.root / "resumed.log").write_text(resumed_output)

    assert resumed.returncode == 0, resumed_output[-3000:]
    assert f"resuming run: {run_dir}" in resumed_output
    assert {name: process.pid for name, process in federation.supernodes.items() if process.poll() is None} == nodes_before
    rounds = _metrics(run_dir)
    assert [entry["round"] for entry in rounds] == [1, 2]
    # Round 1's line is the very one written before the restart: that round was not run again.
    assert (run_dir / "metrics.jsonl").read_text().splitlines()[:1] == checkpointed_lines
    assert len(rounds[1]["clients"]) == 2  # every SuperNode came back
    assert json.loads((run_dir / "results.json").read_text())["federation"]["rounds"] == 2

    federation.stop()
    assert federation.leftovers() == []
