"""One experiment's assets: data, data plan, teacher, pre-stored knowledge, and its student.

Both roles use it: the server side (launcher, ServerApp, `fedtosc train`, `fedtosc knowledge
build`) prepares the teacher and knowledge with `prepare_experiment`; nodes load the data and
plan (`load_experiment`), build the student (`experiment_student`) and, in online KD, the
teacher. Everything is deterministic in the config and cached on disk by fingerprint: the
launcher prepares it once with progress bars, and a later call gets the cached teacher and
store back without recomputation.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch

from fedtosc.cache_lock import entry_lock
from fedtosc.config import ConfigError, ExperimentConfig
from fedtosc.data import DataPlan, DataSplits, load_dataset, plan_data
from fedtosc.knowledge.builder import build_knowledge
from fedtosc.knowledge.codecs import KnowledgeCodec
from fedtosc.knowledge.store import KnowledgeStore, KnowledgeStoreError
from fedtosc.models.student import StudentCodec, build_student
from fedtosc.models.teachers import Teacher, TeacherCacheRebuilt, predict
from fedtosc.ray_cluster import RayAddressError, cluster_address
from fedtosc.registries import CODECS, TEACHERS

__all__ = [
    "Experiment",
    "KnowledgeCacheRebuilt",
    "TeacherCacheRebuilt",  # defined with the server teacher it concerns; here beside its knowledge sibling
    "codec_for",
    "ensure_knowledge",
    "knowledge_path",
    "embedding_width",
    "experiment_student",
    "load_experiment",
    "load_teacher",
    "prepare_experiment",
    "resolve_device",
    "teacher_summary",
]

# The teacher sees images exactly as stored (uint8 -> [0, 1]); recorded in every store header.
TRANSFORM = "uint8/255"


@dataclass(frozen=True)
class Experiment:
    config: ExperimentConfig
    splits: DataSplits
    plan: DataPlan
    dataset_fingerprint: str


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_experiment(config: ExperimentConfig) -> Experiment:
    splits = load_dataset(config.dataset, config.seed)
    plan = plan_data(splits.train.labels.numpy(), config.dataset, config.federation, config.seed, config.knowledge.delivery)
    return Experiment(config, splits, plan, splits.train.fingerprint())


def embedding_width(config: ExperimentConfig, store: KnowledgeStore | None) -> int | None:
    """Width of the teacher embedding the student learns to predict: the store's, when the run
    distils pre-stored embeddings (an embedding codec); None otherwise (no projection head)."""
    if config.knowledge.mode != "prestored" or store is None or not store.codec().decodes_embeddings:
        return None
    return int(store.decode(store.index[:1]).embeddings.shape[1])


def experiment_student(experiment: Experiment, embedding_dim: int | None) -> StudentCodec:
    """The student for this experiment's images and classes (the one place students are built)."""
    train = experiment.splits.train
    return build_student(train.image_shape[0], len(train.class_names), experiment.config.student, embedding_dim)


def load_teacher(experiment: Experiment, device: torch.device) -> Teacher:
    """The teacher `teacher.name` names (`fedtosc.registries.TEACHERS`), built for this experiment."""
    return TEACHERS.get(experiment.config.teacher.name)(experiment, device)


def teacher_summary(teacher: Teacher, experiment: Experiment, device: torch.device) -> dict:
    outputs = predict(teacher, experiment.splits.test, experiment.config.teacher.batch_size, device, desc="teacher eval")
    accuracy = float((outputs.logits.argmax(1) == experiment.splits.test.labels).float().mean())
    return {"name": teacher.display_name, "id": teacher.teacher_id, "params": teacher.num_params(), "accuracy": accuracy}


def codec_for(config: ExperimentConfig) -> KnowledgeCodec:
    """The codec `knowledge.codec` names, with the settings it reads from the knowledge config."""
    return CODECS.get(config.knowledge.codec).from_config(config.knowledge)


def knowledge_path(experiment: Experiment, teacher: Teacher) -> Path:
    codec = codec_for(experiment.config)
    knowledge = experiment.config.knowledge
    fields = {
        "teacher": teacher.teacher_id,
        "data": experiment.dataset_fingerprint,
        "indices": hashlib.sha256(experiment.plan.distillation_indices.tobytes()).hexdigest(),
        "codec": codec.name,
        "params": codec.params(),
    }
    if knowledge.views > 1:  # one view keeps the key it had before views existed: cached stores stay valid
        fields |= {"views": knowledge.views, "view_seed": knowledge.view_seed}
    key = json.dumps(fields, sort_keys=True)
    name = f"{codec.name}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.safetensors"
    return Path(knowledge.cache_dir).expanduser() / name


class KnowledgeCacheRebuilt(UserWarning):
    """A cached knowledge store failed its checks (corrupt, truncated, stale) and is being rebuilt;
    the message names the file and what was wrong with it."""


def ensure_knowledge(experiment: Experiment, teacher: Teacher, device: torch.device) -> KnowledgeStore:
    """The store for this teacher, data and codec: opened from cache, or built once now."""
    _check_codec_fits_teacher(experiment.config, teacher)
    path = knowledge_path(experiment, teacher)
    knowledge = experiment.config.knowledge
    expect = {
        "teacher_id": teacher.teacher_id,
        "dataset_fingerprint": experiment.dataset_fingerprint,
        "views": str(knowledge.views),
    }
    with entry_lock(path):  # another process making this very store: wait for it, then open it
        if path.is_file():
            try:
                return KnowledgeStore.open(path, expect=expect)
            except KnowledgeStoreError as error:
                # A cache entry derives from the teacher and the data alone, so rebuilding it (atomically
                # replaced below) is the fix and the run goes on; a corrupt or stale file is still news.
                warnings.warn(f"rebuilding the cached {error}", KnowledgeCacheRebuilt, stacklevel=2)
        try:
            # `ray.address` or RAY_ADDRESS: the teacher pass runs on that cluster (docs/scale-out.md).
            ray_address = cluster_address(experiment.config.ray.address)
        except RayAddressError as error:
            raise ConfigError(str(error)) from error
        summary = teacher_summary(teacher, experiment, device)
        return build_knowledge(
            teacher,
            experiment.splits.train,
            experiment.plan.distillation_indices,
            codec_for(experiment.config),
            path,
            dataset_fingerprint=experiment.dataset_fingerprint,
            transform=TRANSFORM,
            batch_size=experiment.config.teacher.batch_size,
            device=device,
            extra={"teacher": summary},
            views=knowledge.views,
            view_seed=knowledge.view_seed,
            ray_address=ray_address,
        )


def _check_codec_fits_teacher(config: ExperimentConfig, teacher: Teacher) -> None:
    """Settings only the teacher can check, before its pass over the data rather than after."""
    width = int(teacher.linear_head()[0].shape[1])
    if config.knowledge.codec == "pca_embedding" and config.knowledge.pca_dim > width:
        raise ConfigError(
            f"knowledge.pca_dim={config.knowledge.pca_dim} exceeds the teacher's embedding width {width} "
            f"({teacher.display_name}): use knowledge.pca_dim <= {width}"
        )


def prepare_experiment(
    config: ExperimentConfig, device: torch.device | None = None
) -> tuple[Experiment, Teacher, KnowledgeStore]:
    """Data, teacher and pre-stored knowledge (the one place they are set up), with progress bars.

    Seeded first, so a teacher trained here is the same whichever command trains it. `device`
    defaults to `config.device`.
    """
    torch.manual_seed(config.seed)
    device = resolve_device(config.device) if device is None else device
    experiment = load_experiment(config)
    teacher = load_teacher(experiment, device)
    return experiment, teacher, ensure_knowledge(experiment, teacher, device)
