"""Specification of the run record shared by `fedtosc run` and `fedtosc train`: one metrics line per round or epoch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from fedtosc.config import load_config
from fedtosc.experiment import ensure_knowledge, load_experiment, load_teacher
from fedtosc.federated import payload_bytes
from fedtosc.models.student import build_student
from fedtosc.run_record import RunRecorder

_CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - (config, experiment, store)
    cache = tmp_path_factory.mktemp("cache")  # one tiny teacher and store for both tests
    config = load_config([
        "student.width=4", "student.feature_dim=16", "teacher.width=4", "teacher.epochs=1",
        f"teacher.cache_dir={cache}/t", f"knowledge.cache_dir={cache}/k",
    ])
    experiment = load_experiment(config)
    return config, experiment, ensure_knowledge(experiment, load_teacher(experiment, _CPU), _CPU)


def _recorder(run_dir: Path, assets, mode: str) -> tuple[RunRecorder, torch.nn.Module]:  # noqa: ANN001
    config, experiment, store = assets
    nodes = {7: {"partition-id": 0, "channel-profile": "awgn@0dB"}}
    recorder = RunRecorder(run_dir, experiment, store, nodes, knowledge_bytes=100, device=_CPU, mode=mode)
    train = experiment.splits.train
    return recorder, build_student(train.image_shape[0], len(train.class_names), config.student)


def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_federated_round_line_counts_client_metrics_and_bytes(tmp_path: Path, assets) -> None:  # noqa: ANN001
    recorder, student = _recorder(tmp_path, assets, "federated")
    reply = RecordDict({
        "arrays": ArrayRecord(student.state_dict()),
        "metrics": MetricRecord({"train_total": 1.5, "train_accuracy": 0.5, "num-examples": 10}),
    })
    recorder.aggregate_train_metrics([reply], "num-examples")
    recorder.evaluate_round(0, ArrayRecord(student.state_dict()))  # the initial model: no line
    recorder.evaluate_round(1, ArrayRecord(student.state_dict()))
    [line] = _lines(tmp_path)
    assert (line["round"], line["train_loss"], line["train_accuracy"]) == (1, 1.5, 0.5)
    assert line["bytes_up"] == payload_bytes(reply) > 0
    assert line["bytes_down"] > 100  # the model sent down, plus the knowledge broadcast
    assert 0.0 <= line["test_accuracy"] <= 1.0


def test_centralized_epoch_lines_move_no_bytes_and_results_say_centralized(tmp_path: Path, assets) -> None:  # noqa: ANN001
    recorder, student = _recorder(tmp_path, assets, "centralized")
    for epoch in (1, 2):
        recorder.record_epoch(1, epoch, student, {"train_total": 2.0, "train_accuracy": 0.25})
    assert [(line["round"], line["epoch"], line["bytes_down"], line["bytes_up"]) for line in _lines(tmp_path)] == [
        (1, 1, 0, 0), (1, 2, 0, 0),
    ]
    results = recorder.finish(student)
    assert results["federation"]["mode"] == "centralized"
    config = assets[0]
    assert results["evaluation"] == {
        "source": "channel.eval_channels",
        "links": [
            {"label": "awgn", "channel": "awgn", "k_factor": 3.0, "csi": "perfect"},
            {"label": "rayleigh", "channel": "rayleigh", "k_factor": 3.0, "csi": "perfect"},
        ],
        "snr_db": config.channel.eval_snr_db,
    }
    assert list(results["accuracy_vs_snr"]) == [link["label"] for link in results["evaluation"]["links"]]
    assert (tmp_path / "channel_uses.png").is_file() and (tmp_path / "accuracy_vs_snr.png").is_file()
