"""Which Ray a command uses, and what each simulated client asks of it (docs/scale-out.md).

`ray.address` (or the RAY_ADDRESS environment variable) names an existing cluster to join: `auto`
or the GCS `<host>:<port>`. Unset, the simulation starts a Ray instance of its own, which the
launcher stops afterwards; a joined cluster is never stopped. Ray is imported only where a
cluster is queried, so config checks stay light.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction

__all__ = [
    "ClientResources",
    "NodeResources",
    "RayAddressError",
    "check_address",
    "check_own_cpus",
    "client_resources",
    "cluster_address",
    "cluster_nodes",
    "connected",
    "local_nodes",
]

# Ray spells "start a new local instance" this way in RAY_ADDRESS; the launcher sets it when no
# cluster is named, so Flower's bare `ray.init()` never joins a cluster someone else started
# with `ray start` on this machine (Ray's default is to join the latest one it finds).
LOCAL = "local"
# Fractions of a CPU are turned into whole CPUs by scaling Ray's CPU count; beyond this
# denominator the scaling would be meaningless (and Ray rounds resources to 1e-4 anyway).
_MAX_CPU_DENOMINATOR = 64


class RayAddressError(ValueError):
    """A Ray address fedtosc cannot use; the message says which forms it takes."""


def check_address(address: str) -> None:
    """Raise RayAddressError unless `address` is `auto` or `<host>:<port>`."""
    if address == "auto":
        return
    if address.startswith("ray://"):
        raise RayAddressError(
            f"{address!r} is a Ray Client address, which fedtosc does not use: give the GCS address "
            "(<head>:6379), or run fedtosc on a cluster node with ray.address=auto"
        )
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RayAddressError(f"{address!r} is not auto or <host>:<port> (e.g. 10.0.0.5:6379, the head's GCS port)")


def cluster_address(configured: str | None) -> str | None:
    """The cluster to join: `ray.address` when set, else RAY_ADDRESS; None: a Ray of our own."""
    if configured is not None:
        return configured
    from_env = os.environ.get("RAY_ADDRESS", "")
    if from_env in ("", LOCAL):
        return None
    try:
        check_address(from_env)
    except RayAddressError as error:
        raise RayAddressError(f"RAY_ADDRESS: {error}; unset it or set ray.address") from None
    return from_env


def check_own_cpus(num_cpus: int | None, address: str | None, named: str) -> None:
    """Raise RayAddressError when `ray.num_cpus` is set for a run that joins the cluster at `address`
    (`named`: the key or variable that gave it): a cluster's CPUs are set when its nodes start."""
    if num_cpus is not None and address is not None:
        raise RayAddressError(
            f"ray.num_cpus={num_cpus} sets the CPUs of the run's own Ray, but {named}={address} joins a cluster "
            "whose CPUs were set when its nodes started (`ray start --num-cpus`): unset one of them"
        )


@dataclass(frozen=True)
class NodeResources:
    """One Ray node's schedulable CPUs and GPUs."""

    cpus: float
    gpus: float


@dataclass(frozen=True)
class ClientResources:
    """What Flower's Ray backend is told: per-client CPUs (whole, as Flower 1.42 carries them) and
    GPUs, and, on a Ray of our own, the CPU count to start it with (None: what Ray detects)."""

    cpus: int
    gpus: float
    ray_num_cpus: int | None = None

    def federation_config(self) -> str:
        """The `flwr run --federation-config` entries."""
        entries = f"client-resources-num-cpus={self.cpus} client-resources-num-gpus={self.gpus!r}"
        if self.ray_num_cpus is not None:
            entries += f" init-args-num-cpus={self.ray_num_cpus}"
        return entries


@contextmanager
def connected(address: str, runtime_env: dict | None = None) -> Iterator[None]:
    """A Ray driver connection (a job) to the cluster at `address`, closed afterwards if opened here.

    `runtime_env`: what the job's workers get (e.g. `py_modules`); it applies only to a connection
    opened here."""
    import ray

    opened = not ray.is_initialized()
    if opened:
        ray.init(
            address=address, runtime_env=runtime_env, include_dashboard=False, log_to_driver=False,
            logging_level="WARNING",
        )
    try:
        yield
    finally:
        if opened:
            ray.shutdown()


def cluster_nodes(address: str) -> list[NodeResources]:
    """The live nodes of the cluster at `address`."""
    import ray

    with connected(address):
        return [
            NodeResources(float(node["Resources"].get("CPU", 0)), float(node["Resources"].get("GPU", 0)))
            for node in ray.nodes()
            if node.get("Alive") and node.get("Resources")
        ]


def local_nodes(num_cpus: int | None = None) -> list[NodeResources]:
    """This machine as the one node a Ray of our own would have: `num_cpus` CPUs (None: what Ray
    counts, this process's cores) and the GPUs Ray would count."""
    import torch

    if num_cpus is None:
        num_cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return [NodeResources(float(num_cpus), float(torch.cuda.device_count()))]


def client_resources(
    client_cpus: float, client_gpus: float | None, device: str, nodes: list[NodeResources], own_ray: bool,
    own_cpus: int | None = None,
) -> ClientResources:
    """Per-client resources for Flower's Ray backend.

    Flower 1.42 passes client CPUs as a whole number (its federation config field is an integer),
    so a fraction 1/d of a CPU becomes one CPU of a Ray started with d times this machine's CPUs:
    the same number of clients per core. A joined cluster's CPU count is fixed when its nodes
    start, so there a fraction is refused with the fix. `client_gpus` None: each client gets an
    equal share of a GPU node's GPUs, enough for every CPU slot there, when any node has a GPU
    and `device` is not cpu. `own_cpus`: the CPUs a Ray of our own starts with (`ray.num_cpus`; None:
    what Ray counts), which `nodes` already reflect.
    """
    fraction = Fraction(client_cpus).limit_denominator(_MAX_CPU_DENOMINATOR)
    if abs(float(fraction) - client_cpus) > 1e-9:
        raise RayAddressError(f"federation.client_cpus={client_cpus} is not a simple fraction (1/2, 1/4, 3/2, ...)")
    ray_num_cpus = own_cpus
    if fraction.denominator > 1:
        if not own_ray:
            raise RayAddressError(
                f"federation.client_cpus={client_cpus}: Flower 1.42 passes client CPUs to a Ray cluster as a whole "
                f"number. Use a whole number, or start the cluster's nodes with `ray start --num-cpus` set to "
                f"{fraction.denominator} x their cores and use federation.client_cpus={fraction.numerator}"
            )
        ray_num_cpus = int(sum(node.cpus for node in nodes)) * fraction.denominator
    gpus = client_gpus if client_gpus is not None else _gpu_share(float(fraction), device, nodes)
    if gpus > 0 and not any(node.gpus > 0 for node in nodes):
        raise RayAddressError(f"federation.client_gpus={gpus} but the Ray cluster has no GPUs: set federation.client_gpus=0")
    return ClientResources(cpus=fraction.numerator, gpus=gpus, ray_num_cpus=ray_num_cpus)


def _gpu_share(client_cpus: float, device: str, nodes: list[NodeResources]) -> float:
    if device == "cpu":
        return 0.0
    # The smallest share over GPU nodes, so that on every one of them each CPU slot gets a client.
    shares = [node.gpus / math.floor(node.cpus / client_cpus) for node in nodes if node.gpus > 0 and node.cpus >= client_cpus]
    if not shares:
        return 0.0
    # Ray keeps resource amounts to 4 decimals: round down so that the slots still fit.
    return min(1.0, math.floor(min(shares) * 10_000) / 10_000)
