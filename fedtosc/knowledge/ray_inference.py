"""The knowledge build's teacher pass on a Ray cluster: Ray Data `map_batches` over a pool of teacher actors.

One dataset row is one chunk of the build (fedtosc.knowledge.builder): its uint8 rows and view
parameters. Each actor holds one copy of the teacher (from the object store, put there once) on
a GPU when the cluster has GPUs and `device` allows it, else on one CPU, and runs the same
`predict` over the chunk, in the same batches, as a local build. Chunks come back in whatever
order they finish; the builder saves each on arrival, so a killed build keeps what arrived.

Ray ships this package to the cluster's workers (runtime_env `py_modules`); torch and the
teacher's libraries must be installed on every node (docs/scale-out.md).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

import fedtosc
from fedtosc.data.datasets import ImageDataset
from fedtosc.knowledge.builder import ChunkInput
from fedtosc.models.outputs import TeacherOutputs
from fedtosc.models.teachers import Teacher, predict

__all__ = ["infer_on_ray"]


class _TeacherActor:
    """One teacher on one device; Ray Data calls it with one chunk at a time."""

    def __init__(self, teacher_ref: object, batch_size: int, use_gpu: bool) -> None:
        import ray

        self.device = torch.device("cuda" if use_gpu else "cpu")
        # Ray may hand the constructor the object itself rather than its reference.
        teacher = ray.get(teacher_ref) if isinstance(teacher_ref, ray.ObjectRef) else teacher_ref
        self.teacher: Teacher = teacher.to(self.device)
        self.batch_size = batch_size

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        # batch_size=1: one chunk. Ragged chunks (the last one is shorter) arrive as object arrays.
        images = torch.from_numpy(np.ascontiguousarray(batch["images"][0]))
        views = batch["view_params"][0]
        rows = ImageDataset(images=images, labels=torch.zeros(len(images), dtype=torch.int64), class_names=())
        outputs = predict(
            self.teacher, rows, self.batch_size, self.device,
            progress=tqdm(disable=True), view_params=torch.from_numpy(views) if views.size else None,
        )
        return {
            "start": batch["start"],
            "logits": outputs.logits.numpy()[None],
            "embeddings": outputs.embeddings.numpy()[None],
        }


def infer_on_ray(
    teacher: Teacher,
    jobs: Iterable[ChunkInput],
    batch_size: int,
    device: torch.device,
    address: str,
    progress: tqdm,
) -> Iterator[tuple[int, TeacherOutputs]]:
    """(chunk start, teacher outputs) for every job, computed on the cluster at `address`."""
    import ray
    import ray.data

    from fedtosc.ray_cluster import connected

    items = [
        {
            "start": job.start,
            "images": job.rows.images.numpy(),
            # An empty array stands for "the images as stored": a column needs one type.
            "view_params": np.zeros((0,), np.int16) if job.view_params is None else job.view_params.numpy(),
        }
        for job in jobs
    ]
    if not items:
        return
    # Ray uploads this package to the cluster and puts it on the workers' path, so nodes need
    # no copy of the checkout (only the installed dependencies).
    runtime_env = {"py_modules": [str(Path(fedtosc.__file__).parent)]}
    with connected(address, runtime_env=runtime_env):
        gpus = int(ray.cluster_resources().get("GPU", 0)) if device.type != "cpu" else 0
        workers = gpus or max(1, int(ray.cluster_resources().get("CPU", 1)))
        # The object store holds one copy of the teacher; a CPU copy, so CPU-only nodes can load it.
        on_cpu = teacher if next(teacher.parameters()).device.type == "cpu" else copy.deepcopy(teacher).cpu()
        teacher_ref = ray.put(on_cpu)
        outputs = ray.data.from_items(items, override_num_blocks=len(items)).map_batches(
            _TeacherActor,
            fn_constructor_kwargs={"teacher_ref": teacher_ref, "batch_size": batch_size, "use_gpu": gpus > 0},
            batch_size=1,
            batch_format="numpy",
            concurrency=(1, min(workers, len(items))),
            num_gpus=1 if gpus else 0,
            num_cpus=1,
        )
        for row in outputs.iter_rows():
            logits = torch.from_numpy(np.array(row["logits"], dtype=np.float32))
            progress.update(len(logits))
            yield int(row["start"]), TeacherOutputs(
                logits=logits, embeddings=torch.from_numpy(np.array(row["embeddings"], dtype=np.float32))
            )
