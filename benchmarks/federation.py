"""What does Flower + Ray cost on top of the local training it runs? Round time and memory by clients.

- Overhead: the round time of `fedtosc run` (Flower simulation on Ray) over the same rounds in a
  plain Python loop: same clients, same data, the ClientApp's own `local_data` + `run_client_round`
  calls and seeds, the same FedAvg (an example-weighted mean of the arrays) and the same
  per-round central evaluation (`StudentEvaluator.reference_accuracy`). Same parallelism: Flower
  runs with `federation.client_cpus=1` (two Ray actors, one torch thread each, on 2 cores), and
  the loop hands clients to a pool of two worker processes with one torch thread each. The runs
  are interleaved and repeated, because the machine's cores are shared.
- Scale: round time and peak memory of the same setup at 10, 50, 100 clients.
Round time is the median of the differences of `elapsed_s` between consecutive rounds in
metrics.jsonl, rounds 2..R: round 1 also carries start-up and the knowledge broadcast.
Peak memory: every 0.5 s, the RSS (and PSS) of the launcher, its descendants and every process
carrying the run's FLWR_HOME (SuperLink, SuperExec, Ray daemons and actors) is summed; the max is kept.

    .venv/bin/python benchmarks/federation.py --json benchmarks/results/federation.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from flwr.app import RecordDict

from fedtosc.config import ExperimentConfig, config_to_json, load_config
from fedtosc.evaluation import StudentEvaluator
from fedtosc.experiment import embedding_width, experiment_student, prepare_experiment
from fedtosc.federation.client_round import run_client_round
from fedtosc.federation.node import cached_experiment, client_profile
from fedtosc.federation.node_data import local_data
from fedtosc.federation.payloads import knowledge_record
from fedtosc.process_memory import PeakMemorySampler
from report_output import emit

_CPU = torch.device("cpu")
_GOAL = "<= 1.3"
_SAMPLE_INTERVAL_S = 0.5


def main() -> None:
    args = _arguments()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="fedtosc-federation-bench-"))
    # Every size runs once; the ratio size runs `repeats` times. Flower and the loop alternate, so a
    # busy moment on the shared machine hits both alike.
    sizes = [args.ratio_clients] * args.repeats + [n for n in args.clients if n != args.ratio_clients]
    rows = []
    for index, clients in enumerate(sizes):
        overrides = _overrides(args, work, clients)
        flower = _flower_run(overrides, work / f"run-{index}-{clients}")
        plain = _plain_loop(load_config(overrides), workers=2)
        rows.append({"clients": clients, **flower, "plain_round_s": plain["round_s"], "plain_rounds_s": plain["rounds_s"],
                     "flower_over_plain_loop": flower["round_s"] / plain["round_s"]})
    overhead = [row for row in rows if row["clients"] == args.ratio_clients]
    scale = [next(row for row in rows if row["clients"] == clients) for clients in sorted({*args.clients})]
    ratios = [row["flower_over_plain_loop"] for row in overhead]
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared, noisy), CPU",
        "setup": {"dataset": "digits", "rounds": args.rounds, "local_epochs": args.local_epochs,
                  "server_fraction": args.server_fraction, "ratio_clients": args.ratio_clients,
                  "parallelism": "Flower client_cpus=1 (two Ray actors, 1 torch thread each) vs the loop in a "
                                 "pool of two worker processes, 1 torch thread each",
                  "round_time": "median of elapsed_s differences, rounds 2..R (round 1 includes start-up "
                                "and the knowledge broadcast)"},
        "flower_over_plain_loop": statistics.median(ratios),
        "flower_over_plain_loop_all": ratios,
        "overhead_runs": overhead,
        "scale": scale,
        "goal": {"flower_over_plain_loop": _GOAL},
        "commands": " ".join([Path(sys.executable).name, *sys.argv]),
    }
    emit(report, _table(report), args.json)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the figures here (and the table beside it as .md)")
    parser.add_argument("--clients", type=int, nargs="+", default=[10, 50, 100], help="federation sizes for the scale table")
    parser.add_argument("--ratio-clients", type=int, default=10, help="federation size for the overhead ratio")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved Flower/loop pairs for the ratio")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--server-fraction", type=float, default=0.3, help="share of digits the server keeps")
    parser.add_argument("--work-dir", help="run directories and caches (default: a fresh temp dir)")
    return parser.parse_args()


def _overrides(args: argparse.Namespace, work: Path, clients: int) -> list[str]:
    return [
        "dataset=digits",
        f"dataset.server_fraction={args.server_fraction}",
        f"federation.num_clients={clients}",
        f"federation.rounds={args.rounds}",
        "federation.client_cpus=1",  # two one-thread Ray actors on 2 cores
        f"train.local_epochs={args.local_epochs}",
        "channel.clients='awgn:0~20'",  # one entry, repeated for every client
        "channel.eval_snr_db=[0,20]",  # the final sweep is outside the timed rounds; keep it short
        "device=cpu",
        # The teacher only sets the soft labels' values, not the round cost: a small, quick one.
        "teacher.epochs=2",
        "teacher.width=16",
        f"teacher.cache_dir={work / 'teachers'}",
        f"knowledge.cache_dir={work / 'knowledge'}",
    ]


def _flower_run(overrides: list[str], run_dir: Path) -> dict:
    """`fedtosc run` in a subprocess, its process tree's memory sampled meanwhile."""
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "fedtosc.cli", "run", *overrides, f"output_dir={run_dir}"]
    started = time.perf_counter()
    with (run_dir.parent / f"{run_dir.name}.log").open("w") as log:
        launcher = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
        with PeakMemorySampler(launcher.pid, str(run_dir / ".flwr"), _SAMPLE_INTERVAL_S) as sampler:
            code = launcher.wait()
    if code != 0 or not (run_dir / "results.json").is_file():
        raise RuntimeError(f"fedtosc run failed (exit {code}): see {log.name}")
    elapsed = [json.loads(line)["elapsed_s"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rounds = [later - earlier for earlier, later in zip(elapsed, elapsed[1:])]
    return {"round_s": statistics.median(rounds), "rounds_s": rounds, "first_round_s": elapsed[0],
            "wall_s": time.perf_counter() - started, "peak_rss_mib": sampler.peak_rss_bytes / 2**20,
            "peak_pss_mib": sampler.peak_pss_bytes / 2**20, "peak_processes": sampler.peak_processes}


def _plain_loop(config: ExperimentConfig, workers: int) -> dict:
    """The same rounds without Flower: each client's ClientApp body in a worker, FedAvg, central eval.

    `workers` processes with one torch thread each, as Ray runs `client_cpus=1` actors.
    """
    config_json = json.dumps(config_to_json(config))
    experiment, _, store = prepare_experiment(config, _CPU)
    torch.manual_seed(config.seed)  # the ServerApp's initial global model
    global_student = experiment_student(experiment, embedding_width(config, store))
    state = {name: value.numpy() for name, value in global_student.state_dict().items()}
    evaluator = StudentEvaluator(experiment, _CPU)
    rounds = []
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(workers, mp_context=context, initializer=torch.set_num_threads, initargs=(1,)) as pool:
        for server_round in range(1, config.federation.rounds + 1):
            started = time.perf_counter()
            jobs = [pool.submit(_client_update, config_json, partition, state, server_round)
                    for partition in range(config.federation.num_clients)]
            state = _fedavg([job.result() for job in jobs])
            global_student.load_state_dict({name: torch.from_numpy(value) for name, value in state.items()})
            evaluator.reference_accuracy(global_student)
            rounds.append(time.perf_counter() - started)
    # Round 1 also spawns the workers and loads data, teacher and knowledge in them: excluded, like Flower's.
    return {"round_s": statistics.median(rounds[1:]), "rounds_s": rounds}


def _fedavg(updates: list[tuple[dict[str, np.ndarray], int]]) -> dict[str, np.ndarray]:
    """Flower's FedAvg: each array averaged over the clients, weighted by their example counts."""
    total = sum(count for _, count in updates)
    return {name: np.asarray(sum(values[name] * (count / total) for values, count in updates)) for name in updates[0][0]}


@lru_cache(maxsize=2)
def _knowledge_slices(config_json: str) -> list[RecordDict | None]:
    """What the broadcast hands each node once (the store is cached on disk by the Flower run); None
    for every node when the run distils no pre-stored knowledge, as the ClientApp then reads none."""
    experiment = cached_experiment(config_json)
    if experiment.config.knowledge.mode != "prestored":
        return [None] * experiment.config.federation.num_clients
    _, _, store = prepare_experiment(experiment.config, _CPU)
    return [knowledge_record(store, experiment.plan.knowledge_indices(partition))
            for partition in range(experiment.config.federation.num_clients)]


def _client_update(config_json: str, partition: int, state: dict, server_round: int) -> tuple[dict, int]:
    """One client's round, through the ClientApp's own path: `local_data`, then `run_client_round`."""
    experiment = cached_experiment(config_json)
    data = local_data(experiment, partition, _knowledge_slices(config_json)[partition])
    global_state = {name: torch.from_numpy(value) for name, value in state.items()}
    trained, metrics = run_client_round(experiment, partition, client_profile(experiment.config, partition), data,
                                        global_state, server_round, _CPU)
    return {name: value.numpy() for name, value in trained.items()}, int(metrics["num-examples"])


def _table(report: dict) -> str:
    setup = report["setup"]
    lines = [
        f"# federation ({report['machine']})",
        "",
        f"digits, {setup['rounds']} rounds, {setup['local_epochs']} local epoch(s); round time = {setup['round_time']}.",
        "",
        f"Overhead at {setup['ratio_clients']} clients; {setup['parallelism']}:",
        "",
        "| repeat | Flower round s | plain loop round s | ratio |",
        "|---:|---:|---:|---:|",
    ]
    for repeat, row in enumerate(report["overhead_runs"], 1):
        lines.append(f"| {repeat} | {row['round_s']:.2f} | {row['plain_round_s']:.2f} | {row['flower_over_plain_loop']:.2f} |")
    ratios = report["flower_over_plain_loop_all"]
    lines += [
        "",
        f"flower_over_plain_loop = {report['flower_over_plain_loop']:.2f} (median; spread {min(ratios):.2f}-"
        f"{max(ratios):.2f}; goal {_GOAL})",
        "",
        f"Scale (same setup; the {setup['ratio_clients']}-client row is the first repeat above):",
        "",
        "| clients | Flower round s | plain loop round s | ratio | round 1 s | wall s | peak RSS MiB (sum) | peak PSS MiB (sum) | processes |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in report["scale"]:
        lines.append(
            f"| {row['clients']} | {row['round_s']:.2f} | {row['plain_round_s']:.2f} | {row['flower_over_plain_loop']:.2f} | "
            f"{row['first_round_s']:.1f} | {row['wall_s']:.0f} | {row['peak_rss_mib']:.0f} | {row['peak_pss_mib']:.0f} | "
            f"{row['peak_processes']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
