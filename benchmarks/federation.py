"""What does Flower + Ray cost on top of the local training it runs? Per-message overhead and round-time ratio.

Both modes time `fedtosc run` (Flower simulation on Ray) against the same rounds in a plain Python
loop: same clients, same data, the ClientApp's own `local_data` + `run_client_round` calls and
seeds, the same FedAvg (an example-weighted mean of the arrays) and the same per-round central
evaluation (`StudentEvaluator.reference_accuracy`). Same parallelism: Flower runs with
`federation.client_cpus=1` (two Ray actors, one torch thread each, on 2 cores), and the loop hands
clients to a pool of two worker processes with one torch thread each. Flower and the loop alternate,
and each size is repeated, because the machine's cores are shared.

- `--mode overhead` (default): the tiny digits workload at 10, 100 and 1,000 clients. Per-message
  overhead = (Flower round time - plain-loop round time) / clients, in ms: what one client's
  train message and reply cost beyond its training. Also the bytes a round moves (the run's own
  count in metrics.jsonl: the global model down to every sampled client, each update up) and the
  run-config record every train message carries besides the model.
- `--mode cifar10`: the round-time ratio on a fixed realistic workload: CIFAR-10, 500 images per
  client, 1 local epoch, batch 32, at 10 and 100 clients (the shipped ResNet-20 teacher, so the
  server keeps no images: `dataset.server_fraction=0`; 1,000 test images for the per-round evaluation).
Round time is the median of the differences of `elapsed_s` between consecutive rounds in
metrics.jsonl, rounds 2..R: round 1 also carries start-up and the knowledge broadcast. Peak memory:
every 0.5 s, the RSS of the launcher, its descendants and every process carrying the run's
FLWR_HOME (SuperLink, SuperExec, Ray daemons and actors) is summed; the max is kept (RSS only: PSS
costs CPU the timed run would lose, see `_flower_run`). Every run
records the 1-minute load average before and after it: quote figures measured idle.
`--flower-pickup-too` also times every Flower run with Flower 1.42's own message pick-up in its
simulation engine (fedtosc.federation.message_pickup documents ours), side by side.

    .venv/bin/python benchmarks/federation.py --flower-pickup-too --json benchmarks/results/federation.json
    .venv/bin/python benchmarks/federation.py --mode cifar10 --data-root ~/.cache/fedtosc/cifar10 \
        --json benchmarks/results/federation_cifar10.json
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from flwr.app import RecordDict
from flwr.common.serde import config_record_to_proto

from fedtosc.config import ExperimentConfig, config_to_json, load_config
from fedtosc.evaluation import StudentEvaluator
from fedtosc.experiment import embedding_width, experiment_student, prepare_experiment
from fedtosc.federation.client_round import run_client_round
from fedtosc.federation.message_pickup import KEEP_FLOWERS
from fedtosc.federation.messages import config_record
from fedtosc.federation.node import cached_experiment, client_profile
from fedtosc.federation.node_data import local_data
from fedtosc.federation.payloads import knowledge_record
from report_output import command_line, emit
from timed_run import timed_run

_CPU = torch.device("cpu")
# The goals: per-message overhead flat from 10 to 1,000 clients (and half of the 20-27 ms
# measured before), and Flower within 10% of the plain loop on the CIFAR-10 workload.
_GOALS = {"overhead_ms_per_message": "<= 10-13, flat from 10 to 1,000 clients", "cifar10_flower_over_plain_loop": "<= 1.1"}


def main() -> None:
    args = _arguments()
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="fedtosc-federation-bench-"))
    clients = args.clients or ([10, 100] if args.mode == "cifar10" else [10, 100, 1000])
    rows = []
    # Repeat r of every size before repeat r + 1 of any: a busy spell on the shared machine hits all sizes.
    for repeat in range(1, args.repeats + 1):
        for size in clients:
            overrides = _overrides(args, work, size)
            config = load_config(overrides)
            flower = _flower_run(overrides, work / f"run-{size}-{repeat}")
            plain = _plain_loop(config, workers=2)
            row = {
                "clients": size, "repeat": repeat, **flower,
                "plain_round_s": plain["round_s"], "plain_rounds_s": plain["rounds_s"],
                "flower_over_plain_loop": flower["round_s"] / plain["round_s"],
                "overhead_ms_per_message": 1000 * (flower["round_s"] - plain["round_s"]) / size,
                "run_config_bytes_per_message": config_record_to_proto(config_record(config)).ByteSize(),
            }
            if args.flower_pickup_too:
                kept = _flower_run(overrides, work / f"run-{size}-{repeat}-flower-pickup", extra_env=dict([KEEP_FLOWERS]))
                row |= {"flower_pickup_round_s": kept["round_s"], "flower_pickup_rounds_s": kept["rounds_s"],
                        "flower_pickup_overhead_ms_per_message": 1000 * (kept["round_s"] - plain["round_s"]) / size,
                        "flower_pickup_over_ours": kept["round_s"] / flower["round_s"]}
            rows.append(row)
    summary = [_summary(size, [row for row in rows if row["clients"] == size]) for size in clients]
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared, noisy), CPU",
        "mode": args.mode,
        "setup": {"dataset": "digits" if args.mode == "overhead" else "cifar10", "rounds": args.rounds,
                  "local_epochs": args.local_epochs, "overrides": _overrides(args, work, clients[0]),
                  "parallelism": "Flower client_cpus=1 (two Ray actors, 1 torch thread each) vs the loop in a "
                                 "pool of two worker processes, 1 torch thread each",
                  "round_time": "median of elapsed_s differences, rounds 2..R (round 1 includes start-up "
                                "and the knowledge broadcast)"},
        "summary": summary,
        "runs": rows,
        "goals": _GOALS,
        "commands": command_line(),
    }
    emit(report, _table(report), args.json)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the figures here (and the table beside it as .md)")
    parser.add_argument("--mode", choices=("overhead", "cifar10"), default="overhead")
    parser.add_argument("--clients", type=int, nargs="+", help="federation sizes (default: 10 100 1000; cifar10: 10 100)")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved Flower/loop pairs per size")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--local-epochs", type=int, default=1)
    parser.add_argument("--server-fraction", type=float, default=0.2,
                        help="digits: share the server keeps (0.2 leaves 1,078 client samples, enough for 1,000 clients)")
    parser.add_argument("--data-root", default="~/.cache/fedtosc/cifar10", help="cifar10: the extracted image folders")
    parser.add_argument("--images-per-client", type=int, default=500,
                        help="cifar10: the workload is 500; fewer only to check that the script works")
    parser.add_argument("--work-dir", help="run directories and caches (default: a fresh temp dir)")
    parser.add_argument("--flower-pickup-too", action="store_true",
                        help="also time each Flower run with Flower's own message pick-up (FEDTOSC_ENGINE_PICKUP=flower), "
                             "right after ours and against the same plain loop")
    return parser.parse_args()


def _overrides(args: argparse.Namespace, work: Path, clients: int) -> list[str]:
    common = [
        f"federation.num_clients={clients}",
        f"federation.rounds={args.rounds}",
        "federation.client_cpus=1",  # two one-thread Ray actors on 2 cores
        f"train.local_epochs={args.local_epochs}",
        "channel.clients='awgn:0~20'",  # one entry, repeated for every client
        "channel.eval_snr_db=[0,20]",  # the final sweep is outside the timed rounds; keep it short
        "device=cpu",
        f"teacher.cache_dir={work / 'teachers'}",
        f"knowledge.cache_dir={work / 'knowledge'}",
    ]
    if args.mode == "overhead":
        return [
            "dataset=digits",
            f"dataset.server_fraction={args.server_fraction}",
            # The teacher only sets the soft labels' values, not the round cost: a small, quick one.
            "teacher.epochs=2",
            "teacher.width=16",
            *common,
        ]
    return [
        "dataset=cifar10_folder",
        f"dataset.root='{Path(args.data_root).expanduser()}'",  # Hydra's grammar has no '~'
        "dataset.server_fraction=0",  # the shipped teacher needs no server images: every image is a client's
        f"dataset.max_train_samples={clients * args.images_per_client}",  # the iid partitioner gives each client its share
        "dataset.max_test_samples=1000",
        "teacher=resnet_cifar",
        "train.batch_size=32",
        *common,
    ]


def _flower_run(overrides: list[str], run_dir: Path, extra_env: dict[str, str] | None = None) -> dict:
    """`fedtosc run` timed, with the bytes its rounds 2..R moved (round 1's include the knowledge broadcast)."""
    # RSS alone: sampling PSS took a third of a core from the Flower run, which the plain loop it is
    # compared with never paid (CIFAR-10 at 100 clients read 1.14 with it).
    figures, lines, _ = timed_run(overrides, run_dir, extra_env=extra_env, pss=False)
    return {**figures,
            "bytes_down_per_round": int(statistics.median(line["bytes_down"] for line in lines[1:])),
            "bytes_up_per_round": int(statistics.median(line["bytes_up"] for line in lines[1:]))}


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


def _summary(clients: int, runs: list[dict]) -> dict:
    """Median and spread over the repeats of one size."""
    def spread(key: str) -> dict:
        values = [run[key] for run in runs]
        return {"min": min(values), "median": statistics.median(values), "max": max(values)}

    return {
        "clients": clients,
        "overhead_ms_per_message": spread("overhead_ms_per_message"),
        "flower_over_plain_loop": spread("flower_over_plain_loop"),
        "flower_round_s": statistics.median(run["round_s"] for run in runs),
        "plain_round_s": statistics.median(run["plain_round_s"] for run in runs),
        "bytes_per_round": statistics.median(run["bytes_down_per_round"] + run["bytes_up_per_round"] for run in runs),
        "run_config_bytes_per_message": runs[0]["run_config_bytes_per_message"],
        "peak_rss_mib": max(run["peak_rss_mib"] for run in runs),
        "load_average": [min(run["load_before"] for run in runs), max(run["load_after"] for run in runs)],
    }


def _table(report: dict) -> str:
    setup = report["setup"]
    lines = [
        f"# federation, {report['mode']} ({report['machine']})",
        "",
        f"{setup['dataset']}, {setup['rounds']} rounds, {setup['local_epochs']} local epoch(s); round time = "
        f"{setup['round_time']}; {setup['parallelism']}.",
        "",
        "| clients | repeat | Flower round s | plain loop round s | ratio | overhead ms/message | bytes down/round | "
        "bytes up/round | peak RSS MiB | load avg before-after |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["runs"]:
        lines.append(
            f"| {row['clients']} | {row['repeat']} | {row['round_s']:.2f} | {row['plain_round_s']:.2f} | "
            f"{row['flower_over_plain_loop']:.2f} | {row['overhead_ms_per_message']:.1f} | {row['bytes_down_per_round']:,} | "
            f"{row['bytes_up_per_round']:,} | {row['peak_rss_mib']:.0f} | {row['load_before']:.1f}-{row['load_after']:.1f} |"
        )
    lines += [
        "",
        "Over the repeats, min / median / max; every train message also carries the run-config record (bytes):",
        "",
        "| clients | overhead ms/message | Flower / plain loop | bytes per round | run config B/message | load avg range |",
        "|---:|---|---|---:|---:|---|",
    ]
    for row in report["summary"]:
        overhead, ratio = row["overhead_ms_per_message"], row["flower_over_plain_loop"]
        lines.append(
            f"| {row['clients']} | {overhead['min']:.1f} / {overhead['median']:.1f} / {overhead['max']:.1f} | "
            f"{ratio['min']:.2f} / {ratio['median']:.2f} / {ratio['max']:.2f} | {row['bytes_per_round']:,} | "
            f"{row['run_config_bytes_per_message']:,} | {row['load_average'][0]:.1f}-{row['load_average'][1]:.1f} |"
        )
    kept = [row for row in report["runs"] if "flower_pickup_round_s" in row]
    if kept:
        lines += [
            "",
            "The same runs with Flower's own message pick-up (`FEDTOSC_ENGINE_PICKUP=flower`), each right after ours, "
            "against the same plain loop:",
            "",
            "| clients | repeat | round s, ours | round s, Flower's pick-up | Flower's ÷ ours | overhead ms/message, ours | "
            "overhead ms/message, Flower's pick-up |",
            "|---:|---:|---:|---:|---:|---:|---:|",
        ]
        lines += [
            f"| {row['clients']} | {row['repeat']} | {row['round_s']:.2f} | {row['flower_pickup_round_s']:.2f} | "
            f"{row['flower_pickup_over_ours']:.2f} | {row['overhead_ms_per_message']:.1f} | "
            f"{row['flower_pickup_overhead_ms_per_message']:.1f} |"
            for row in kept
        ]
    lines += ["", "Goals: " + "; ".join(f"{key} {goal}" for key, goal in report["goals"].items())]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
