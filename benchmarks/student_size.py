"""Benchmark: the student's on-device size and latency against open_clip's ViT-B-32 visual tower.

Issue 3 asks that the on-device part of the student (encoder, SNR gate, variational head; see
`StudentCodec.encoder_modules`) keep at most 3% of the teacher tower's parameters. Latency is CPU
wall time per image: the student from images to channel symbols at 32x32 RGB, the tower at 224x224
(random weights: cost does not depend on them). Prints a Markdown table; `--json PATH` saves figures.

    python benchmarks/student_size.py --json benchmarks/results/student_size.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import torch

from fedtosc.config import StudentConfig
from fedtosc.evaluation import encoder_latency_ms, median_ms_per_item, model_size
from fedtosc.models.student import build_student
from fedtosc.results import write_json_atomic

STUDENT_IMAGE_SHAPE = (3, 32, 32)
TEACHER_IMAGE_SHAPE = (3, 224, 224)
NUM_CLASSES = 10
BATCH_SIZES = (1, 256)
PARAM_BUDGET = 0.03


def _student_row(name: str, config: StudentConfig, repeats: int) -> dict:
    torch.manual_seed(0)
    student = build_student(STUDENT_IMAGE_SHAPE[0], NUM_CLASSES, config)
    sizes = model_size(student)
    latency = {f"batch_{b}": encoder_latency_ms(student, STUDENT_IMAGE_SHAPE, b, repeats) for b in BATCH_SIZES}
    return {"name": name, "params": sizes["encoder_params"], "total_params": sizes["params"], "latency_ms": latency}


@torch.inference_mode()
def _teacher_row(repeats: int) -> dict:
    import open_clip  # slow to import; only this row needs it

    visual = open_clip.create_model("ViT-B-32", pretrained=None).visual.eval()
    params = sum(p.numel() for p in visual.parameters())
    latency = {}
    for batch_size in BATCH_SIZES:
        images = torch.rand(batch_size, *TEACHER_IMAGE_SHAPE)
        # ~30 images/s on a 2-core CPU: a batch of 256 takes seconds, so it gets few calls and no
        # warm-up of its own (the batch-1 calls before it have warmed up the kernels).
        calls, warmup = (repeats, 1) if batch_size == 1 else (max(1, repeats // 5), 0)
        latency[f"batch_{batch_size}"] = median_ms_per_item(lambda: visual(images), batch_size, calls, warmup)
    return {"name": "ViT-B-32 visual tower (224x224)", "params": params, "total_params": params, "latency_ms": latency}


def _markdown(rows: list[dict], teacher_params: int) -> str:
    lines = [
        "| model | on-device params | total params | vs ViT-B-32 visual | ms/img, batch 1 | ms/img, batch 256 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        latency = row["latency_ms"]
        lines.append(
            f"| {row['name']} | {row['params']:,} | {row['total_params']:,} | {row['params'] / teacher_params:.2%} "
            f"| {latency['batch_1']:.3f} | {latency['batch_256']:.3f} |"
        )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--repeats", type=int, default=10, help="timed calls per student latency (teacher: fewer)")
    args = parser.parse_args()

    adaptive = dataclasses.replace(StudentConfig(), adaptive=True, rate_adaptive=True)
    baseline = dataclasses.replace(StudentConfig(), adaptive=False, rate_adaptive=False)
    student = _student_row("student, adaptive + rate-adaptive (32x32 RGB)", adaptive, args.repeats)
    rows = [student, _student_row("student, non-adaptive baseline (32x32 RGB)", baseline, args.repeats)]
    teacher = _teacher_row(args.repeats)
    rows.append(teacher)

    ratio = student["params"] / teacher["params"]
    print(_markdown(rows, teacher["params"]))
    print(
        f"\non-device student / ViT-B-32 visual tower = {ratio:.4%} (budget {PARAM_BUDGET:.0%}); "
        f"CPU threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}"
    )
    if args.json is not None:
        write_json_atomic(
            args.json,
            {
                "student_params": student["params"],
                "student_total_params": student["total_params"],
                "teacher_visual_params": teacher["params"],
                "param_ratio": ratio,
                "param_budget": PARAM_BUDGET,
                "student_config": dataclasses.asdict(adaptive),
                "student_image_shape": list(STUDENT_IMAGE_SHAPE),
                "teacher_image_shape": list(TEACHER_IMAGE_SHAPE),
                "student_latency_ms_per_image": student["latency_ms"],
                "teacher_latency_ms_per_image": teacher["latency_ms"],
                "rows": rows,
                "torch_threads": torch.get_num_threads(),
                "load_average_1min": os.getloadavg()[0],
            },
        )
    return 0 if ratio <= PARAM_BUDGET else 1


if __name__ == "__main__":
    raise SystemExit(main())
