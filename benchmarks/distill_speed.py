"""Is pre-stored distillation really fast? Epoch times, build throughput, and codec size/fidelity.

One run, one student, one data subset, one code path (`fedtosc.training.train_student`):
- epoch time with pre-stored KD vs label-only training, and online KD (open_clip ViT-B-32 run
  on every batch) vs pre-stored KD. Online KD is timed on a few batches and extrapolated to
  the epoch (time per batch x batches per epoch), and the output says so;
- knowledge build throughput (`build_knowledge`, ViT-B-32) vs a plain open_clip inference
  loop over the same images: 512 images, 7 paired repeats in alternating order, the median of
  the per-repeat ratios with their min / median / max (sized so that two runs agree within 3%);
- bytes per sample and fidelity (KL to full soft labels, argmax agreement) of each codec on
  CIFAR-10 with the server-trained teacher.
ViT-B-32 runs at random weights (teacher.allow_random_weights): weights don't change its cost.

    .venv/bin/python benchmarks/distill_speed.py --data-root ~/.cache/fedtosc/cifar10 \
        --json benchmarks/results/distill_speed.json
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from fedtosc.channels import client_profiles
from fedtosc.config import load_config
from fedtosc.experiment import TRANSFORM, codec_for, load_experiment, load_teacher
from fedtosc.knowledge.builder import build_knowledge
from fedtosc.knowledge.codecs import build_codec
from fedtosc.knowledge.store import KnowledgeStore
from fedtosc.models.student import build_student
from fedtosc.models.teachers import build_clip_teacher, predict
from fedtosc.training import LocalData, train_student
from report_output import emit

_CPU = torch.device("cpu")
_CODECS = ("full", "topk", "int8_embedding", "pca_embedding")
_GOALS = {"prestored_over_label_only": "<= 1.10", "online_over_prestored": ">= 20", "build_over_plain_inference": ">= 0.95"}


def main() -> None:
    args = _arguments()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = load_config(
        [
            "dataset=cifar10_folder",
            f"dataset.root='{Path(args.data_root).expanduser()}'",  # Hydra's grammar has no '~'

            f"dataset.max_train_samples={args.train_samples}",
            f"dataset.max_test_samples={args.test_samples}",
            f"teacher.epochs={args.teacher_epochs}",
            f"teacher.width={args.teacher_width}",
            f"teacher.cache_dir='{Path(args.cache_dir).expanduser()}/teachers'",
            "device=cpu",
        ]
    )
    experiment = load_experiment(config)
    distill = np.sort(experiment.plan.distillation_indices)
    train = experiment.splits.train
    vit = build_clip_teacher(
        replace(config.teacher, name="clip", model="ViT-B-32", allow_random_weights=True),
        train.class_names,
        _CPU,
        dataset_name=config.dataset.name,
    )
    with tempfile.TemporaryDirectory() as scratch:
        codecs = _codec_table(experiment, distill, Path(scratch))
        epochs = _epoch_times(config, experiment, distill, vit, codecs["store_paths"]["topk"], args)
        build = _build_vs_plain(vit, train.subset(distill[: args.build_samples]), Path(scratch), args)
    report = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, CPU",
        "data": {"dataset": "CIFAR-10 (JPEG folders)", "train_samples": len(train), "distillation_samples": len(distill)},
        "epochs": epochs,
        "build": build,
        "codecs": codecs["rows"],
        "server_teacher": codecs["teacher"],
        "prestored_over_label_only": epochs["prestored_s"] / epochs["label_only_s"],
        "online_over_prestored": epochs["online_extrapolated_s"] / epochs["prestored_s"],
        "build_over_plain_inference": build["ratio_spread"]["median"],
        "goals": _GOALS,
        "load_average": " / ".join(f"{value:.1f}" for value in os.getloadavg()),  # 1, 5, 15 min, at the end
    }
    emit(report, _table(report), args.json)


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", default="~/.cache/fedtosc/cifar10", help="CIFAR-10 image folders (train/, test/)")
    parser.add_argument("--json", type=Path, help="write the figures here (and the table beside it as .md)")
    parser.add_argument("--train-samples", type=int, default=4000, help="cap on CIFAR-10 training images")
    parser.add_argument("--test-samples", type=int, default=1000)
    parser.add_argument("--teacher-epochs", type=int, default=8, help="server-trained teacher (codec fidelity)")
    parser.add_argument("--teacher-width", type=int, default=32)
    parser.add_argument("--epoch-samples", type=int, default=2048, help="student epoch size for the epoch timings")
    parser.add_argument("--online-batches", type=int, default=3, help="online-KD batches timed, then extrapolated")
    parser.add_argument("--build-samples", type=int, default=512, help="images for build vs plain inference (ViT-B-32)")
    parser.add_argument("--build-repeats", type=int, default=7, help="paired build/plain timings; the median ratio is kept")
    parser.add_argument("--teacher-batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats; the fastest of each is kept")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--cache-dir", default=tempfile.gettempdir() + "/fedtosc-bench", help="server-teacher cache")
    return parser.parse_args()


def _codec_table(experiment, distill: np.ndarray, scratch: Path) -> dict:  # noqa: ANN001
    """Build one store per codec with the server-trained teacher; size and fidelity from the stores."""
    teacher = load_teacher(experiment, _CPU)
    rows, paths = [], {}
    for name in _CODECS:
        config = replace(experiment.config, knowledge=replace(experiment.config.knowledge, codec=name))
        path = scratch / f"{name}.safetensors"
        store = build_knowledge(
            teacher, experiment.splits.train, distill, codec_for(config), path,
            dataset_fingerprint=experiment.dataset_fingerprint, transform=TRANSFORM,
            batch_size=experiment.config.teacher.batch_size, device=_CPU,
        )
        rows.append({"codec": name, "params": store.header.codec_params, "bytes_per_sample": store.bytes_per_sample,
                     **store.header.extra["fidelity"]})
        paths[name] = path
    test = experiment.splits.test
    accuracy = float((predict(teacher, test, 256, _CPU).logits.argmax(1) == test.labels).float().mean())
    return {"rows": rows, "store_paths": paths,
            "teacher": {"name": teacher.display_name, "params": teacher.num_params(), "test_accuracy": accuracy}}


def _epoch_times(config, experiment, distill: np.ndarray, vit, topk_path: Path, args) -> dict:  # noqa: ANN001
    rows = distill[: args.epoch_samples]
    train = experiment.splits.train
    probs = KnowledgeStore.open(topk_path).decode(rows).probs
    data = LocalData(train.images[rows], train.labels[rows], torch.ones(len(rows), dtype=torch.bool), probs)
    batch = config.train.batch_size
    online_rows = args.online_batches * batch
    online_data = LocalData(data.images[:online_rows], data.labels[:online_rows], data.labelled[:online_rows])
    profile = client_profiles(config.channel, config.federation.num_clients)[0]

    def epoch_seconds(local: LocalData, mode: str, teacher=None) -> float:  # noqa: ANN001
        student = build_student(train.image_shape[0], len(train.class_names), config.student)
        run_config = replace(config, knowledge=replace(config.knowledge, mode=mode))
        started = time.perf_counter()
        train_student(student, local, profile=profile, channel=profile.make_channel(config.channel.block_length),
                      config=run_config, server_round=1, generator=torch.Generator().manual_seed(0), device=_CPU,
                      online_teacher=teacher)
        return time.perf_counter() - started

    label_only, prestored = [], []
    for _ in range(args.repeats):  # interleaved, so a busy moment on a shared machine hits both alike
        label_only.append(epoch_seconds(replace(data, teacher_probs=None), "none"))
        prestored.append(epoch_seconds(data, "prestored"))
    online = epoch_seconds(online_data, "online", vit)
    batches_per_epoch = -(-len(rows) // batch)
    return {
        "epoch_samples": len(rows),
        "batch_size": batch,
        "label_only_s": min(label_only),
        "prestored_s": min(prestored),
        "label_only_all_s": label_only,
        "prestored_all_s": prestored,
        "online_timed_batches": args.online_batches,
        "online_timed_s": online,
        "online_extrapolated_s": online / args.online_batches * batches_per_epoch,
        "online_note": f"online KD timed on {args.online_batches} batches of {batch}, "
                       f"extrapolated x{batches_per_epoch / args.online_batches:.1f} to the epoch",
    }


def _build_vs_plain(vit, images, scratch: Path, args) -> dict:  # noqa: ANN001
    """Images/s of `build_knowledge` (teacher + chunks + codec + store) vs a bare encode_image loop.

    Each repeat times both, back to back, in alternating order, and gives one ratio: a busy spell on
    the shared machine then slows both sides of that ratio alike. The figure is the median ratio;
    min / median / max show how far repeats disagree (128 images and the fastest of 3 once read 1.04
    and 0.90 in two idle runs).
    """
    batch = args.teacher_batch_size
    _plain_inference(vit, images.images[:batch], batch)  # warm-up: first-call allocations are in neither side
    plain, build = [], []
    for repeat in range(args.build_repeats):
        for side in ("plain", "build") if repeat % 2 == 0 else ("build", "plain"):
            started = time.perf_counter()
            if side == "plain":
                _plain_inference(vit, images.images, batch)
            else:
                build_knowledge(vit, images, np.arange(len(images)), build_codec("topk", k=5, temperature=4.0),
                                scratch / f"vit-{repeat}.safetensors", dataset_fingerprint=images.fingerprint(),
                                transform=TRANSFORM, batch_size=batch, device=_CPU)
            (plain if side == "plain" else build).append(time.perf_counter() - started)
    ratios = [plain_s / build_s for plain_s, build_s in zip(plain, build)]
    return {"images": len(images), "batch_size": batch, "repeats": args.build_repeats, "plain_s": plain, "build_s": build,
            "plain_img_per_s": len(images) / statistics.median(plain), "build_img_per_s": len(images) / statistics.median(build),
            "ratios": ratios, "ratio_spread": {"min": min(ratios), "median": statistics.median(ratios), "max": max(ratios)}}


@torch.inference_mode()
def _plain_inference(vit, images: torch.Tensor, batch: int) -> None:  # noqa: ANN001
    """What one would write by hand: resize to 224, normalize, encode_image, cosine logits."""
    for start in range(0, len(images), batch):
        x = images[start : start + batch].float().div(255.0)
        x = F.interpolate(x, size=vit.image_size, mode="bicubic", align_corners=False).clamp(0, 1)
        embeddings = F.normalize(vit.visual((x - vit.mean) / vit.std), dim=-1)
        (vit.logit_scale * embeddings @ vit.head.T).softmax(dim=1)


def _table(report: dict) -> str:
    epochs, build = report["epochs"], report["build"]
    spread = build["ratio_spread"]
    lines = [
        f"# distill_speed ({report['machine']})",
        "",
        f"student epoch over {epochs['epoch_samples']} CIFAR-10 images, batch {epochs['batch_size']} (fastest of repeats):",
        "",
        "| training | epoch s | ratio | goal |",
        "|---|---:|---:|---|",
        f"| label only | {epochs['label_only_s']:.2f} | 1.00 | |",
        f"| pre-stored KD (top-k) | {epochs['prestored_s']:.2f} | {report['prestored_over_label_only']:.3f} x label only | {_GOALS['prestored_over_label_only']} |",
        f"| online KD (ViT-B-32), extrapolated | {epochs['online_extrapolated_s']:.1f} | {report['online_over_prestored']:.1f} x pre-stored | {_GOALS['online_over_prestored']} |",
        "",
        f"({epochs['online_note']}.)",
        "",
        f"knowledge build (ViT-B-32, {build['images']} images, batch {build['batch_size']}, {build['repeats']} paired "
        f"repeats in alternating order): {build['build_img_per_s']:.1f} img/s vs plain open_clip loop "
        f"{build['plain_img_per_s']:.1f} img/s (medians) -> ratio {report['build_over_plain_inference']:.3f}, "
        f"min / median / max over repeats {spread['min']:.3f} / {spread['median']:.3f} / {spread['max']:.3f} "
        f"(goal {_GOALS['build_over_plain_inference']}; load average {report['load_average']})",
        "",
        f"codecs on {report['data']['distillation_samples']} CIFAR-10 images, server-trained teacher "
        f"{report['server_teacher']['name']} (test accuracy {report['server_teacher']['test_accuracy']:.3f}):",
        "",
        "| codec | params | bytes/sample | KL to full | argmax agreement | embedding rel. error |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for row in report["codecs"]:
        params = ", ".join(f"{k}={v}" for k, v in sorted(row["params"].items()))
        lines.append(
            f"| {row['codec']} | {params} | {row['bytes_per_sample']:.1f} | {_cell(row, 'kl_to_full', '.2e')} | "
            f"{_cell(row, 'argmax_agreement', '.4f')} | {_cell(row, 'embedding_relative_error', '.4f')} |"
        )
    return "\n".join(lines)


def _cell(row: dict, key: str, spec: str) -> str:
    return format(row[key], spec) if key in row else "-"


if __name__ == "__main__":
    main()
