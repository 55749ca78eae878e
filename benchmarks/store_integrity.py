"""Benchmark: what checking every tensor's sha256 digest costs when a knowledge store is opened.

Writes a synthetic store of 50,000 samples per codec (top-5 soft labels over 10 classes, and
int8 embeddings of width 512, CLIP ViT-B-32's), then times `KnowledgeStore.open` (which verifies
the digests) and the digest check alone, median of repeats. Prints a Markdown table; `--json PATH`
saves the figures beside it.

    python benchmarks/store_integrity.py --json benchmarks/results/store_integrity.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open

from fedtosc.digests import digest_problem
from fedtosc.knowledge.codecs import build_codec
from fedtosc.knowledge.store import KnowledgeStore, StoreHeader, write_store
from fedtosc.models.outputs import TeacherOutputs
from report_output import emit

NUM_SAMPLES = 50_000
NUM_CLASSES = 10
EMBEDDING_WIDTH = 512
CODECS = {"topk": {"k": 5, "temperature": 4.0}, "int8_embedding": {}}


def _store(folder: Path, codec_name: str) -> Path:
    generator = torch.Generator().manual_seed(0)
    outputs = TeacherOutputs(
        logits=torch.randn(NUM_SAMPLES, NUM_CLASSES, generator=generator),
        embeddings=torch.randn(NUM_SAMPLES, EMBEDDING_WIDTH, generator=generator),
    )
    codec = build_codec(codec_name, **CODECS[codec_name])
    shared = codec.fit(outputs)
    header = StoreHeader(
        teacher_id="benchmark", dataset_fingerprint="synthetic", transform="uint8/255", codec=codec_name,
        codec_params=codec.params(), num_samples=NUM_SAMPLES, num_classes=NUM_CLASSES,
    )
    path = folder / f"{codec_name}.safetensors"
    write_store(path, header, codec.encode(outputs, shared), np.arange(NUM_SAMPLES), shared)
    return path


def _median_seconds(run, repeats: int) -> float:  # noqa: ANN001
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        timings.append(time.perf_counter() - started)
    return statistics.median(timings)


def _verify_only(path: Path) -> None:
    with safe_open(str(path), framework="numpy") as handle:
        assert digest_problem({name: handle.get_tensor(name) for name in handle.keys()}, handle.metadata()) is None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for codec_name in CODECS:
            path = _store(Path(folder), codec_name)
            open_s = _median_seconds(lambda: KnowledgeStore.open(path), args.repeats)
            verify_s = _median_seconds(lambda: _verify_only(path), args.repeats)
            rows.append({
                "codec": codec_name, "file_mb": path.stat().st_size / 1e6,
                "open_ms": 1000 * open_s, "verify_ms": 1000 * verify_s,
            })
    load = os.getloadavg()[0]
    lines = [
        f"Knowledge store of {NUM_SAMPLES:,} samples: open (with digest check) vs the digest check alone; "
        f"median of {args.repeats}, load average {load:.1f}",
        "",
        "| codec | file (MB) | open (ms) | digest check (ms) |",
        "|---|---:|---:|---:|",
    ]
    lines += [f"| {r['codec']} | {r['file_mb']:.1f} | {r['open_ms']:.1f} | {r['verify_ms']:.1f} |" for r in rows]
    emit({"num_samples": NUM_SAMPLES, "load_average": load, "rows": rows}, "\n".join(lines), args.json)


if __name__ == "__main__":
    main()
