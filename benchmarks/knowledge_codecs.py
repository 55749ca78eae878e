"""Report: what each knowledge codec keeps of the teacher, against the bytes it broadcasts.

For every codec setting of the knowledge-rate study (top-1/2/5/10 soft labels, full soft labels,
int8 embeddings, PCA embeddings at 1/8 and 1/4 of the teacher's embedding width) it opens the
store `fedtosc run` would use, building it once into the knowledge cache when missing, and prints
bytes per sample with the fidelity recorded at build: KL to the exact soft labels and argmax
agreement (soft-label codecs at their temperature; embedding codecs through the teacher's head at
T=1) and, for embeddings, the relative error. `--json PATH` saves the figures beside the table.

    python benchmarks/knowledge_codecs.py dataset=cifar10_folder teacher=resnet_cifar \
        dataset.server_fraction=0 --json results/cifar10_knowledge/codecs.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from pathlib import Path

from fedtosc.commands.knowledge import describe_store
from fedtosc.config import ExperimentConfig
from fedtosc.experiment import ensure_knowledge, load_experiment, load_teacher, resolve_device
from fedtosc.preflight import load_checked_config
from report_output import emit

TOP_K = (1, 2, 5, 10)
PCA_FRACTIONS = (8, 4)  # PCA keeps 1/8 and 1/4 of the teacher's embedding width


def _settings(width: int) -> list[dict]:
    """The knowledge-config changes of each codec setting, cheapest broadcast first."""
    settings = [{"codec": "topk", "k": k} for k in TOP_K]
    settings += [{"codec": "pca_embedding", "pca_dim": width // f} for f in PCA_FRACTIONS]
    return settings + [{"codec": "int8_embedding"}, {"codec": "full"}]


def _with_knowledge(config: ExperimentConfig, changes: dict) -> ExperimentConfig:
    return dataclasses.replace(config, knowledge=dataclasses.replace(config.knowledge, **changes))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("overrides", nargs="*", help="Hydra overrides naming the dataset and teacher")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here (and the table as .md)")
    args = parser.parse_args()
    config = load_checked_config(args.overrides)
    device = resolve_device(config.device)
    experiment = load_experiment(config)
    teacher = load_teacher(experiment, device)
    width = int(teacher.linear_head()[0].shape[1])
    rows = []
    for changes in _settings(width):
        started = time.perf_counter()
        store = ensure_knowledge(dataclasses.replace(experiment, config=_with_knowledge(config, changes)), teacher, device)
        described = describe_store(store)
        rows.append(
            {
                "setting": ", ".join(f"{key}={value}" for key, value in changes.items()),
                **changes,
                "codec_params": described["codec_params"],
                "num_samples": described["num_samples"],
                "bytes_per_sample": described["bytes_per_sample"],
                "store_path": described["path"],
                "seconds": time.perf_counter() - started,
                **described["fidelity"],
            }
        )
    lines = [
        f"Knowledge codecs on {config.dataset.name} ({rows[0]['num_samples']:,} samples), teacher "
        f"{teacher.display_name} (embedding width {width}); load average {os.getloadavg()[0]:.1f}",
        "",
        "| codec | bytes / sample | KL to exact soft labels (nats) | argmax agreement | embedding rel. error |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        error = row.get("embedding_relative_error")
        lines.append(
            f"| {row['setting']} | {row['bytes_per_sample']:g} | {row['kl_to_full']:.3g} | "
            f"{row['argmax_agreement']:.4f} | {'' if error is None else f'{error:.4f}'} |"
        )
    report = {"overrides": args.overrides, "teacher": teacher.display_name, "embedding_width": width, "codecs": rows}
    emit(report, "\n".join(lines), args.json)


if __name__ == "__main__":
    main()
