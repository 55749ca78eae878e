"""The same work on the CPU and on a CUDA GPU, side by side: the knowledge build and one client round.

    python benchmarks/gpu.py --json benchmarks/results/gpu_h200.json [key=value ...]

Needs a GPU (CI has none; the script says so and stops; `--device cpu` compares the CPU with
itself, a check of the script). The default workload is the CIFAR-10 studies' budget: the image
folders at --data-root, the shipped ResNet-20 teacher, its top-5 store over 4,000 training
images, 4 Dirichlet clients, one client round of 2 local epochs at batch 32. Extra Hydra
overrides go last.

What it measures and checks, each device from the same inputs:
- the knowledge build (`ensure_knowledge`: teacher eval, the pass, encoding, the safetensors
  file): wall time, images per second, and whether the GPU store holds what the CPU store holds,
  built once with TF32 allowed and once not (the teacher pass pins float32 either way). They are
  not bit-equal: cuDNN sums a convolution in another order than the CPU, so the logits differ in
  the last float32 bits, and a soft label on an fp16 rounding boundary can round the other way.
  The table gives the largest soft-label difference and how often rows and the argmax agree.
- one client round (`run_client_round`, the ClientApp's own update) from the same global
  weights, data, knowledge slice and seeds, so the same random draws: on the CPU, then on the
  GPU twice with TF32 allowed (the first includes CUDA's start-up; the two differ, as GPU
  kernels need not sum in one order) and once in float32: wall time, relative L2 distance of the
  trained student from the CPU's, and its test accuracy at AWGN 10 dB, evaluated on the CPU
  with the same channel draws.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file

from fedtosc.channels import seed_channels
from fedtosc.channels.entries import parse_eval_link
from fedtosc.config import load_config
from fedtosc.evaluation import accuracy_at_snr
from fedtosc.experiment import Experiment, embedding_width, ensure_knowledge, experiment_student, load_experiment, load_teacher
from fedtosc.federation.client_round import run_client_round
from fedtosc.federation.node import client_profile
from fedtosc.federation.node_data import local_data
from fedtosc.federation.payloads import knowledge_record
from fedtosc.knowledge.store import KnowledgeStore
from fedtosc.precision import tf32
from report_output import command_line, emit

_CPU = torch.device("cpu")
_EVAL_SNR_DB = 10.0


def main() -> None:
    args = _arguments()
    other = torch.device(args.device)
    if other.type == "cuda" and not torch.cuda.is_available():
        sys.exit("benchmarks/gpu.py compares the CPU with a CUDA GPU, and torch sees no GPU here: run it on a GPU "
                 "machine (--device cpu compares the CPU with itself, a check of the script)")
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="fedtosc-gpu-"))
    config = load_config([*_workload(args, work), *args.overrides])
    experiment = load_experiment(config)
    builds = [_build(experiment, device, work, name, allowed) for device, name, allowed in _builds(other)]
    reference = builds[0]["store"]
    agreement = [{"device": b["device"], "tf32": b["tf32"], **_store_agreement(reference, b.pop("store"))} for b in builds[1:]]
    builds[0].pop("store")
    rounds = _client_rounds(experiment, KnowledgeStore.open(Path(builds[0]["path"])), other)
    report = {
        "machine": f"{_device_name(other)}; host {platform.machine()}, {os.cpu_count()} cores; torch {torch.__version__}",
        "torch_threads": torch.get_num_threads(),
        "workload": {"overrides": [*_workload(args, work), *args.overrides],
                     "distillation_images": int(len(experiment.plan.distillation_indices))},
        "build": builds,
        "store_agreement": agreement,
        "client_round": rounds,
        "command": command_line(),
    }
    emit(report, _table(report), args.json)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, help="write the figures here (and the table beside it as .md)")
    parser.add_argument("--data-root", default="~/.cache/fedtosc/cifar10", help="the extracted CIFAR-10 image folders")
    parser.add_argument("--device", default="cuda", help="what to compare the CPU with (cpu: the CPU with itself)")
    parser.add_argument("--work-dir", help="caches and stores (default: a fresh temp dir)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, after the workload's")
    return parser.parse_args()


def _workload(args: argparse.Namespace, work: Path) -> list[str]:
    return [
        "dataset=cifar10_folder",
        f"dataset.root='{Path(args.data_root).expanduser().resolve()}'",  # Hydra's grammar has no '~'
        f"dataset.cache_dir='{work / 'datasets'}'",
        "dataset.server_fraction=0",
        "dataset.max_train_samples=4000",
        "dataset.max_test_samples=2000",
        "teacher=resnet_cifar",
        "federation.num_clients=4",
        "federation.partitioner=dirichlet",
        "federation.dirichlet_alpha=0.5",
        "train.local_epochs=2",
        "loss.rate_weight=0.02",
    ]


def _builds(other: torch.device) -> list[tuple[torch.device, str, bool]]:
    # On a GPU, asking for TF32 too: the teacher pass runs in float32 whatever torch allows (fedtosc/precision.py).
    if other.type == "cuda":
        return [(_CPU, "cpu", False), (other, "gpu-tf32", True), (other, "gpu-fp32", False)]
    return [(_CPU, "cpu", False), (other, "other", False)]


def _build(experiment: Experiment, device: torch.device, work: Path, name: str, allowed: bool) -> dict:
    """`ensure_knowledge` on `device` into its own cache, timed."""
    knowledge = dataclasses.replace(experiment.config.knowledge, cache_dir=str(work / f"knowledge-{name}"))
    on_device = dataclasses.replace(experiment, config=dataclasses.replace(experiment.config, knowledge=knowledge))
    teacher = load_teacher(on_device, device)
    started = time.perf_counter()
    with tf32(allowed):
        store = ensure_knowledge(on_device, teacher, device)
        _synchronize(device)
    seconds = time.perf_counter() - started
    images = len(experiment.plan.distillation_indices)
    return {"device": device.type, "tf32": allowed, "seconds": seconds, "images_per_s": images / seconds, "path": str(store.path), "store": store,
            "teacher_accuracy": store.header.extra["teacher"]["accuracy"]}


def _store_agreement(cpu: KnowledgeStore, gpu: KnowledgeStore) -> dict:
    rows = cpu.index
    if not np.array_equal(rows, gpu.index):
        raise AssertionError("the CPU and GPU stores cover different samples: the build is not device-independent")
    on_cpu, on_gpu = cpu.decode(rows), gpu.decode(rows)
    # The headers differ (build times); the tensors are what a student trains on.
    first, second = load_file(str(cpu.path)), load_file(str(gpu.path))
    same = first.keys() == second.keys() and all(torch.equal(first[name], second[name]) for name in first)
    figures: dict = {"rows": int(len(rows)), "bit_equal_tensors": same}
    if on_cpu.probs is not None:
        figures |= {
            "max_abs_soft_label_diff": float((on_cpu.probs - on_gpu.probs).abs().max()),
            "argmax_agreement": float((on_cpu.probs.argmax(1) == on_gpu.probs.argmax(1)).float().mean()),
            "rows_with_equal_soft_labels": float((on_cpu.probs == on_gpu.probs).all(1).float().mean()),
        }
    if on_cpu.embeddings is not None:
        figures["max_abs_embedding_diff"] = float((on_cpu.embeddings - on_gpu.embeddings).abs().max())
    return figures


def _client_rounds(experiment: Experiment, store: KnowledgeStore, other: torch.device) -> dict:
    """One client round of partition 0 on the CPU, then twice on `other`, from the same start."""
    config = experiment.config
    data = local_data(experiment, 0, knowledge_record(store, experiment.plan.knowledge_indices(0)))
    torch.manual_seed(config.seed)
    student = experiment_student(experiment, embedding_width(config, store))
    start = {name: value.clone() for name, value in student.state_dict().items()}
    profile = client_profile(config, 0)
    trained, runs = [], []
    plan = [(_CPU, False), (other, True), (other, True), (other, False)] if other.type == "cuda" else [(_CPU, False), (other, False)]
    for device, allowed in plan:
        started = time.perf_counter()
        with tf32(allowed):
            weights, metrics = run_client_round(experiment, 0, profile, data, start, 1, device)
            _synchronize(device)
        runs.append({"device": device.type, "tf32": allowed, "seconds": time.perf_counter() - started,
                     "train_total": float(metrics["train_total"]), "train_accuracy": float(metrics["train_accuracy"])})
        trained.append(weights)
    for run, weights in zip(runs, trained):
        run["relative_l2_to_run_1"] = _relative_l2(trained[0], weights)
        run["test_accuracy_awgn_10db"] = _accuracy(experiment, weights, store)
    return {
        "partition": 0,
        "samples": len(data),
        "runs": runs,
    }


def _relative_l2(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    floats = [name for name, value in a.items() if value.is_floating_point()]
    difference = sum(float((a[name].double() - b[name].cpu().double()).pow(2).sum()) for name in floats)
    size = sum(float(a[name].double().pow(2).sum()) for name in floats)
    return (difference / size) ** 0.5


def _accuracy(experiment: Experiment, weights: dict[str, torch.Tensor], store: KnowledgeStore) -> float:
    student = experiment_student(experiment, embedding_width(experiment.config, store))
    student.load_state_dict({name: value.cpu() for name, value in weights.items()})
    seed_channels(experiment.config.seed)  # the same channel draws for both students
    channel = parse_eval_link("awgn").make_channel(experiment.config.channel.block_length)
    accuracy, _ = accuracy_at_snr(student, experiment.splits.test, channel, _EVAL_SNR_DB, 256, _CPU)
    return accuracy


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _device_name(device: torch.device) -> str:
    return torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU ({platform.processor() or platform.machine()})"


def _table(report: dict) -> str:
    build, agreement, rounds = report["build"], report["store_agreement"], report["client_round"]
    lines = [
        f"# CPU and GPU side by side ({report['machine']}; {report['torch_threads']} torch CPU threads)",
        "",
        f"Knowledge build over {report['workload']['distillation_images']:,} images (teacher eval, pass, encoding, file):",
        "",
        "| device | TF32 allowed | seconds | images/s | teacher test accuracy |",
        "|---|---|---:|---:|---:|",
    ]
    for figures in build:
        lines.append(f"| {figures['device']} | {figures['tf32']} | {figures['seconds']:.1f} | {figures['images_per_s']:,.0f} | {figures['teacher_accuracy']:.4f} |")
    lines += ["", "Each later build against the first (CPU):", ""]
    lines += [", ".join(f"{k} {v}" for k, v in figures.items()) for figures in agreement]
    lines.append("")
    lines += [
        f"One client round (partition {rounds['partition']}, {rounds['samples']} samples) from the same start:",
        "",
        "| run | device | TF32 allowed | seconds | train loss | train accuracy | rel. L2 to run 1 | test acc. AWGN 10 dB |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for number, run in enumerate(rounds["runs"], 1):
        lines.append(
            f"| {number} | {run['device']} | {run['tf32']} | {run['seconds']:.2f} | {run['train_total']:.4f} | "
            f"{run['train_accuracy']:.4f} | {run['relative_l2_to_run_1']:.2e} | {run['test_accuracy_awgn_10db']:.4f} |"
        )
    lines += [
        "",
        "Test accuracy: the trained student evaluated on the CPU, with the same channel draws for every run.",
        "",
        f"Command: `{report['command']}`",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
