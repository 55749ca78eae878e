"""Centralized training: one learner holding every client's data, the upper reference for FL.

Same config, data plan, teacher and knowledge store as a federated run, and the same run
directory (config.yaml, metrics.jsonl, results.json, plots), so `fedtosc train` and
`fedtosc run` results compare line for line. Choices that make the comparison fair:

- data: the union of all client partitions (plus the shared transfer set, once, when the
  plan has one); the server's labelled share stays the teacher's, exactly as in FL;
- channel: every client's link is kept, and each batch draws one at random, so the student
  sees the heterogeneous SNRs (and channel types) that the federation sees;
- budget: federation.rounds * train.local_epochs epochs, i.e. the passes over its data each
  client makes in FL; beta anneals by round as in FL. One metrics.jsonl line per epoch.
  AdamW restarts every epoch, whereas a client's restarts every round, i.e. every
  train.local_epochs epochs (3 by default): the two match only at train.local_epochs=1.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from fedtosc.channels import client_profiles
from fedtosc.config import ExperimentConfig
from fedtosc.evaluation import StudentEvaluator
from fedtosc.experiment import Experiment, experiment_student, prepare_experiment
from fedtosc.federation.node_data import local_data
from fedtosc.federation.payloads import knowledge_record
from fedtosc.metrics_log import MetricsLog
from fedtosc.run_results import finish_run
from fedtosc.training import LocalData, train_student

__all__ = ["pooled_client_data", "train_centralized"]


def pooled_client_data(experiment: Experiment, store) -> LocalData:  # noqa: ANN001 - KnowledgeStore | None
    """Every client's private rows, then the shared transfer set once (if the plan has one).

    Each part is built by `local_data` from the very knowledge slice FL sends that client, so
    the pooled soft labels are exactly the ones the federation trains on.
    """
    plan = experiment.plan
    parts = []
    for partition, private in enumerate(plan.client_indices):
        knowledge = knowledge_record(store, plan.knowledge_indices(partition)) if store is not None else None
        node = local_data(experiment, partition, knowledge)  # rows: its private partition, then the transfer set
        parts.append(_rows(node, slice(0, len(private))))
    if len(plan.transfer_indices):
        parts.append(_rows(node, slice(len(plan.client_indices[-1]), None)))  # the same for every client: once
    return LocalData(**{name: _cat([getattr(part, name) for part in parts]) for name in _FIELDS})


_FIELDS = tuple(field.name for field in dataclasses.fields(LocalData))


def _rows(data: LocalData, rows: slice) -> LocalData:
    return LocalData(**{name: None if getattr(data, name) is None else getattr(data, name)[rows] for name in _FIELDS})


def _cat(values: list[torch.Tensor | None]) -> torch.Tensor | None:
    return None if values[0] is None else torch.cat(values)


def train_centralized(config: ExperimentConfig, run_dir: Path, device: torch.device) -> dict:
    """Train one student on the pooled client data; write the run directory; return results.json's dict."""
    experiment, teacher, store = prepare_experiment(config, device)
    data = pooled_client_data(experiment, store if config.knowledge.mode == "prestored" else None)
    federation = config.federation
    profiles = client_profiles(config.channel, federation.num_clients, seed=config.seed)
    channels = [profile.make_channel(config.channel.block_length) for profile in profiles]
    nodes = {partition: {"partition-id": partition, "channel-profile": p.describe()} for partition, p in enumerate(profiles)}
    evaluator = StudentEvaluator(experiment, device)
    log = MetricsLog(run_dir, evaluator.reference_snr_db)

    torch.manual_seed(config.seed)
    student = experiment_student(experiment, data.embedding_width)
    online_teacher = teacher if config.knowledge.mode == "online" else None
    one_epoch = dataclasses.replace(config, train=dataclasses.replace(config.train, local_epochs=1))
    generator = torch.Generator().manual_seed(config.seed * 100_003)
    for epoch in range(1, federation.rounds * config.train.local_epochs + 1):
        server_round = (epoch - 1) // config.train.local_epochs + 1
        metrics = train_student(
            student, data, profile=profiles, channel=channels, config=one_epoch, server_round=server_round,
            generator=generator, device=device, online_teacher=online_teacher,
        )
        accuracy = evaluator.reference_accuracy(student)
        # One line per epoch, with the federated fields; nothing moves over a link.
        log.append(server_round, accuracy, [metrics], bytes_down=0, bytes_up=0, epoch=epoch)
        print(f"epoch {epoch}: train loss {metrics['train_total']:.3f}, test accuracy {accuracy:.3f} (awgn)", flush=True)
    return finish_run(
        run_dir, experiment, store, student, evaluator,
        nodes=nodes, knowledge_bytes=0, mode="centralized", started=log.started,
    )
