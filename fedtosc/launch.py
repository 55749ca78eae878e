"""Launching a Flower simulation offline, and leaving nothing behind.

We start our own `flower-superlink --simulation` on a free loopback port (in its own process
group), point a run-local FLWR_HOME at it, and run `flwr run <project> --stream`, which blocks
and streams the ServerApp's logs. Afterwards the SuperLink's process group is terminated, then
every process whose environment carries the run's FLWR_HOME (`flower-superexec`, which starts
in a session of its own, and the Ray daemons and workers).

On an existing Ray cluster (`ray.address`, or RAY_ADDRESS) the Ray driver is the simulation
process, which carries FLWR_HOME; the cluster's daemons and workers do not (the raylets start
workers from their own environment), so the same clean-up ends the run and, with its driver,
the run's actors (Ray ends a job's actors when its driver exits), and never the cluster.
"""

from __future__ import annotations

import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psutil

from fedtosc.app_source import stage_app_source
from fedtosc.config import ConfigError, ExperimentConfig
from fedtosc.ray_cluster import (
    LOCAL, ClientResources, RayAddressError, check_own_cpus, client_resources, cluster_address, cluster_nodes, local_nodes,
)
from fedtosc.run_failure import describe_ended_run

__all__ = [
    "FederationLaunchError",
    "free_port",
    "offline_flower_env",
    "processes_with_env",
    "run_config_arg",
    "run_simulation",
    "simulation_resources",
    "signal_process",
    "stop_run_processes",
    "venv_executable",
    "wait_healthy",
]

FEDERATION_NAME = "fedtosc-sim"
_STARTUP_TIMEOUT_S = 60.0


class FederationLaunchError(RuntimeError):
    """The Flower run could not start or did not finish; the message points at the logs."""


def offline_flower_env(flwr_home: Path) -> dict[str, str]:
    """Telemetry, update checks and runtime dependency installation off; state under the run dir."""
    env = dict(os.environ)
    env.update(
        {
            "FLWR_TELEMETRY_ENABLED": "0",
            "FLWR_DISABLE_UPDATE_CHECK": "1",
            "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
            "FLWR_HOME": str(flwr_home),
            "RAY_USAGE_STATS_ENABLED": "0",
            "PYTHONUNBUFFERED": "1",
            # SuperLink spawns `flower-superexec` by name: it must find this environment's copy.
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        }
    )
    return env


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def venv_executable(name: str) -> str:
    """The executable from this interpreter's environment, so the venv's Flower is used."""
    candidate = Path(sys.executable).parent / name
    return str(candidate) if candidate.exists() else name


def wait_healthy(address: str, timeout_s: float, *, ca_certificate: Path | None = None,
                 process: subprocess.Popen | None = None, hint: str = "") -> None:
    """Return once the SuperLink at `address` (host:port) answers its health check, over https
    when `ca_certificate` is given. FederationLaunchError naming the address and `hint` (where to
    look) when `process`, the SuperLink we started, exits first, or after `timeout_s`."""
    scheme, context = ("http", None) if ca_certificate is None else ("https", ssl.create_default_context(cafile=str(ca_certificate)))
    deadline = time.monotonic() + timeout_s
    while True:
        if process is not None and process.poll() is not None:
            raise FederationLaunchError(f"flower-superlink at {address} exited with code {process.returncode}; {hint}")
        try:
            with urllib.request.urlopen(f"{scheme}://{address}/health", timeout=1.0, context=context) as response:
                if response.status == 200:
                    return
        except OSError:
            pass  # not listening yet, or mid-start
        if time.monotonic() > deadline:
            raise FederationLaunchError(f"no SuperLink answered at {address} within {timeout_s:.0f} s; {hint}")
        time.sleep(0.3)


def processes_with_env(name: str, value: str) -> list[int]:
    """Pids of this user's processes (this one aside) whose environment has name=value."""
    found = []
    for process in psutil.process_iter():
        if process.pid == os.getpid():
            continue
        try:
            if process.environ().get(name) == value:
                found.append(process.pid)
        except psutil.Error:
            continue  # exited meanwhile, or not ours to read
    return found


def stop_run_processes(process: subprocess.Popen, flwr_home: Path, grace_s: float = 15.0) -> None:
    """Stop the SuperLink's group, then anything else that carries this run's FLWR_HOME.

    SuperLink starts `flower-superexec` in a new session, and Ray starts its own daemons,
    so the process group alone does not reach them; the run-local FLWR_HOME marks them all.
    """
    stop_process_group(process, grace_s)
    deadline = time.monotonic() + grace_s
    while (leftovers := processes_with_env("FLWR_HOME", str(flwr_home))) and time.monotonic() < deadline:
        for pid in leftovers:
            signal_process(pid, signal.SIGTERM)
        time.sleep(0.5)
    for pid in processes_with_env("FLWR_HOME", str(flwr_home)):
        signal_process(pid, signal.SIGKILL)


def signal_process(pid: int, signum: int) -> None:
    try:
        os.kill(pid, signum)
    except ProcessLookupError:
        pass


def stop_process_group(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the process group, then SIGKILL whatever is left of it."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_config_arg(run_dir: Path, resume: bool) -> str:
    """`flwr run --run-config` text for the ServerApp (simulated or deployed): the run directory,
    and whether to continue from its checkpoint."""
    return f'run-dir="{run_dir.resolve()}" resume={str(resume).lower()}'


def simulation_resources(config: ExperimentConfig) -> tuple[str | None, ClientResources]:
    """(the cluster to join, or None for a Ray of the run's own; what each client asks of it).

    Raises ConfigError naming the key when the cluster cannot give what the config asks."""
    try:
        address = cluster_address(config.ray.address)
        # A joined cluster is asked what it has; a Ray of our own would have this machine's CPUs and GPUs.
        check_own_cpus(config.ray.num_cpus, address, "ray.address" if config.ray.address is not None else "RAY_ADDRESS")
        nodes = cluster_nodes(address) if address is not None else local_nodes(config.ray.num_cpus)
        resources = client_resources(
            config.federation.client_cpus, config.federation.client_gpus, config.device, nodes, own_ray=address is None,
            own_cpus=config.ray.num_cpus,
        )
    except RayAddressError as error:
        raise ConfigError(str(error)) from error
    except ConnectionError as error:  # ray.init found no cluster there
        raise ConfigError(f"ray.address: no Ray cluster at {address}: {error}; start it (docs/scale-out.md) or unset ray.address") from error
    return address, resources


def run_simulation(config: ExperimentConfig, run_dir: Path, project_root: Path, resume: bool = False) -> None:
    """Run the ServerApp/ClientApp simulation on the Ray backend; block until it ends.

    `resume`: the ServerApp continues from the run directory's last checkpoint.
    """
    flwr_home = run_dir / ".flwr"
    flwr_home.mkdir(parents=True, exist_ok=True)
    # A stale results file from an earlier run in this directory must not pass for this run's.
    (run_dir / "results.json").unlink(missing_ok=True)
    address, resources = simulation_resources(config)
    env = offline_flower_env(flwr_home)
    # Flower's Ray backend calls a bare `ray.init()` (1.42 passes no address through its init-args),
    # which reads RAY_ADDRESS: the cluster to join, or `local` for an instance of the run's own.
    env["RAY_ADDRESS"] = address or LOCAL
    port = free_port()
    (flwr_home / "config.toml").write_text(
        f'[superlink]\ndefault = "{FEDERATION_NAME}"\n\n'
        f'[superlink.{FEDERATION_NAME}]\naddress = "127.0.0.1:{port}"\ninsecure = true\n'
    )
    log_path = run_dir / "superlink.log"
    with log_path.open("w") as log:
        superlink = subprocess.Popen(
            [venv_executable("flower-superlink"), "--insecure", "--simulation", "--host", "127.0.0.1", "--port", str(port)],
            # No --database: state stays in memory (`:flwr-in-memory-state:` would become a file in cwd).
            env=env, cwd=run_dir, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        wait_healthy(f"127.0.0.1:{port}", _STARTUP_TIMEOUT_S, process=superlink, hint=f"see {log_path}")
        federation_config = f"num-supernodes={config.federation.num_clients} {resources.federation_config()}"
        source = stage_app_source(project_root, run_dir)  # what the bundle carries, no more
        command = [
            venv_executable("flwr"), "run", str(source), FEDERATION_NAME, "--stream",
            "--run-config", run_config_arg(run_dir, resume),
            "--federation-config", federation_config,
        ]
        completed = subprocess.run(command, env=env, cwd=project_root, check=False)
        # `flwr run --stream` exits 0 even when the ServerApp raised: the results file is the proof.
        if completed.returncode != 0 or not (run_dir / "results.json").is_file():
            raise FederationLaunchError(describe_ended_run(run_dir, f"the log above and in {log_path}"))
    finally:
        stop_run_processes(superlink, flwr_home)
