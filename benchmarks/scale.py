"""1,000 simulated clients on CIFAR-10: peak memory and round time, and what each process holds.

`fedtosc run` with `federation.num_clients=1000`, `federation.fraction_train=0.05` (50 clients a
round), 3 rounds, CIFAR-10 (every training image a client's: the shipped ResNet-20 teacher needs no
server images), `federation.client_cpus=1`. A reference run has the same 50 clients a round out of
100 (`fraction_train=0.5`), on the same data; a baseline run has 2 clients on 200 images.

Every 0.5 s the script sums the RSS and PSS of the launcher, its descendants and every process
carrying the run's FLWR_HOME (SuperLink, SuperExec, the simulation process, Ray's daemons and
workers), and notes each Ray client actor's RSS. It reports the peaks, the round time (median of
the `elapsed_s` differences, rounds 2..R) and three checks:
- clients are not processes: the ClientApp actors number at most the CPUs over `client_cpus`;
- clients are created per round, never all held at once: the 1,000-client run's peak PSS is within
  `--growth-bound` of the 100-client reference's (10x the clients, the same clients per round);
- the decoded dataset is held once per actor process (`fedtosc.federation.node.cached_experiment`),
  not once per client: an actor's peak RSS, less that of an actor in a baseline run (2 clients on
  200 images), is at most 2.5 decoded training sets (loading briefly holds two), while each actor
  serves about `rounds x 50 / actors` client rounds.

    .venv/bin/python benchmarks/scale.py --data-root ~/.cache/fedtosc/cifar10 --json benchmarks/results/scale.json
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from pathlib import Path

import psutil

from fedtosc.config import load_config
from fedtosc.experiment import load_experiment
from fedtosc.process_memory import PeakMemorySampler
from report_output import command_line, emit
from timed_run import timed_run

_ACTOR_MARK = "ClientAppActor"  # in a Ray worker's process title while it hosts Flower's client actor
# Loading the dataset briefly holds two copies of it (the cached HWC array and the CHW tensor made from
# it); a client that kept its own copy would add one per client an actor serves (tens here).
_DATASET_COPIES_BOUND = 2.5
_RSS_NOISE_MIB = 64  # what an actor's RSS wanders by between runs (allocator, Ray's buffers)
_BASELINE_TRAIN_SAMPLES = 200


def main() -> None:
    args = _arguments()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="fedtosc-scale-bench-"))
    per_round = max(1, int(args.clients * args.fraction))
    # name -> (clients, fraction_train, training images cap)
    plans = {
        "scale": (args.clients, args.fraction, args.max_train_samples),
        "reference": (args.reference_clients, per_round / args.reference_clients, args.max_train_samples),
        # What an actor holds besides the dataset (Python, torch, Sionna, Ray, Flower, a student).
        "baseline": (2, 1.0, _BASELINE_TRAIN_SAMPLES),
    }
    runs = {name: {"clients": clients, **_run(_overrides(args, work, clients, fraction, samples), work / f"run-{name}")}
            for name, (clients, fraction, samples) in plans.items()}
    config = load_config(_overrides(args, work, args.clients, args.fraction, args.max_train_samples))
    train = load_experiment(config).splits.train
    dataset_mib = train.images.numel() * train.images.element_size() / 2**20
    scale, reference, baseline = runs["scale"], runs["reference"], runs["baseline"]
    # Dataset copies an actor holds at its peak, beyond what an actor of the tiny run holds.
    extra_mib = scale["peak_actor_rss_mib"] - baseline["peak_actor_rss_mib"]
    checks = {
        "actors_at_most_slots": 0 < scale["peak_actors"] <= (os.cpu_count() or 1),
        "memory_bounded_in_clients": scale["peak_pss_mib"] <= args.growth_bound * reference["peak_pss_mib"],
        "dataset_once_per_actor": extra_mib <= _DATASET_COPIES_BOUND * dataset_mib + _RSS_NOISE_MIB,
    }
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared, noisy), CPU",
        "setup": {"clients": args.clients, "fraction_train": args.fraction, "clients_per_round": per_round,
                  "rounds": args.rounds, "reference_clients": args.reference_clients,
                  "decoded_train_set_mib": dataset_mib, "actor_rss_over_baseline_mib": extra_mib,
                  "dataset_copies_per_actor": extra_mib / dataset_mib, "dataset_copies_bound": _DATASET_COPIES_BOUND,
                  "growth_bound": args.growth_bound,
                  "overrides": _overrides(args, work, args.clients, args.fraction, args.max_train_samples)},
        "runs": runs,
        "checks": checks,
        "commands": command_line(),
    }
    emit(report, _table(report), args.json)
    if not all(checks.values()):
        sys.exit(1)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the figures here (and the table beside it as .md)")
    parser.add_argument("--data-root", default="~/.cache/fedtosc/cifar10", help="the extracted CIFAR-10 image folders")
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--fraction", type=float, default=0.05, help="federation.fraction_train of the large run")
    parser.add_argument("--reference-clients", type=int, default=100,
                        help="the reference run's clients, sampled to the same clients per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-train-samples", type=int, help="cap CIFAR-10's training set (only to check the script)")
    parser.add_argument("--growth-bound", type=float, default=1.5, help="largest peak PSS ratio, scale run over reference")
    parser.add_argument("--work-dir", help="run directories and caches (default: a fresh temp dir)")
    return parser.parse_args()


def _overrides(args: argparse.Namespace, work: Path, clients: int, fraction: float, train_samples: int | None) -> list[str]:
    return [
        "dataset=cifar10_folder",
        f"dataset.root='{Path(args.data_root).expanduser()}'",  # Hydra's grammar has no '~'
        "dataset.server_fraction=0",
        *([f"dataset.max_train_samples={train_samples}"] if train_samples else []),
        "dataset.max_test_samples=1000",  # the per-round central evaluation, outside what scales with clients
        "teacher=resnet_cifar",
        f"federation.num_clients={clients}",
        f"federation.fraction_train={fraction}",
        f"federation.rounds={args.rounds}",
        "federation.client_cpus=1",
        "train.local_epochs=1",
        "channel.clients='awgn:0~20'",
        "channel.eval_snr_db=[10]",
        "device=cpu",
        f"knowledge.cache_dir={work / 'knowledge'}",
    ]


class _ActorSampler(PeakMemorySampler):
    """Also the peak RSS of any one of the run's Ray client actors, and how many there were at most at once."""

    def __init__(self, root_pid: int, flwr_home: str, interval_s: float = 0.5, pss: bool = True) -> None:
        super().__init__(root_pid, flwr_home, interval_s, pss)
        self.peak_actor_rss_bytes = self.peak_actors = 0

    def sample(self, pids: set[int]) -> None:
        super().sample(pids)
        sizes = []
        # The run's own processes only: another study's Ray on the machine has actors of the same name.
        for pid in pids:
            try:
                process = psutil.Process(pid)
                if _ACTOR_MARK in " ".join(process.cmdline()):
                    sizes.append(process.memory_info().rss)
            except psutil.Error:
                continue  # gone meanwhile
        self.peak_actors = max(self.peak_actors, len(sizes))
        self.peak_actor_rss_bytes = max([self.peak_actor_rss_bytes, *sizes])


def _run(overrides: list[str], run_dir: Path) -> dict:
    """`fedtosc run` timed, with its clients per round and its actors' peak."""
    figures, lines, memory = timed_run(overrides, run_dir, _ActorSampler)
    return {**figures, "clients_per_round": [len(line["clients"]) for line in lines],
            "peak_actor_rss_mib": memory.peak_actor_rss_bytes / 2**20, "peak_actors": memory.peak_actors}


def _table(report: dict) -> str:
    setup = report["setup"]
    columns = ("run", "clients", "round s", "round 1 s", "wall s", "peak RSS MiB (sum)", "peak PSS MiB (sum)", "processes",
               "actors", "peak actor RSS MiB", "load avg before-after")
    description = (f"CIFAR-10, {setup['rounds']} rounds, {setup['clients_per_round']} clients a round; decoded training "
                   f"set {setup['decoded_train_set_mib']:.0f} MiB; round time = median of rounds 2..R.")
    lines = [f"# scale ({report['machine']})", "", description, "", "| " + " | ".join(columns) + " |",
             "|---|" + "---:|" * (len(columns) - 2) + "---|"]
    for name, run in report["runs"].items():
        lines.append(
            f"| {name} | {run['clients']} | {run['round_s']:.1f} | {run['first_round_s']:.1f} | {run['wall_s']:.0f} | "
            f"{run['peak_rss_mib']:.0f} | {run['peak_pss_mib']:.0f} | {run['peak_processes']} | {run['peak_actors']} | "
            f"{run['peak_actor_rss_mib']:.0f} | {run['load_before']:.1f}-{run['load_after']:.1f} |"
        )
    lines += ["", "| check | holds |", "|---|---|"]
    lines += [f"| {name} | {'yes' if holds else 'NO'} |" for name, holds in report["checks"].items()]
    lines += ["", f"An actor's peak RSS over the baseline run's: {setup['actor_rss_over_baseline_mib']:.0f} MiB = "
                  f"{setup['dataset_copies_per_actor']:.2f} decoded training sets (bound {setup['dataset_copies_bound']}, "
                  f"+{_RSS_NOISE_MIB} MiB of allocator noise); growth bound: {setup['growth_bound']} x the reference's peak PSS."]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
