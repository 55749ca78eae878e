"""Specification of the run record shared by `fedtosc run` and `fedtosc train`: one metrics line per round or
epoch (metrics_log; a round's traffic from server/round_traffic.py), then results.json (run_results)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from flwr.app import ArrayRecord, MetricRecord, RecordDict

from fedtosc.config import load_config
from fedtosc.evaluation import StudentEvaluator
from fedtosc.experiment import prepare_experiment
from fedtosc.federation.payloads import payload_bytes
from fedtosc.metrics_log import MetricsLog
from fedtosc.models.student import build_student
from fedtosc.outcomes import outcome_key, read_outcomes
from fedtosc.run_results import finish_run
from server.round_traffic import RoundTraffic

# Its module fixture builds a teacher: under pytest-xdist (`make test`) the module stays on one
# worker, so that happens once.
pytestmark = pytest.mark.xdist_group("test_run_record")

_CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def assets(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - (config, experiment, store)
    cache = tmp_path_factory.mktemp("cache")  # one tiny teacher and store for every test
    config = load_config([
        "student.width=4", "student.feature_dim=16", "teacher.width=4", "teacher.epochs=1",
        f"teacher.cache_dir={cache}/t", f"knowledge.cache_dir={cache}/k",
    ])
    experiment, _, store = prepare_experiment(config, _CPU)
    return config, experiment, store


def _student(assets) -> torch.nn.Module:  # noqa: ANN001
    config, experiment, _ = assets
    train = experiment.splits.train
    return build_student(train.image_shape[0], len(train.class_names), config.student)


def _lines(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def test_federated_round_line_counts_client_metrics_and_bytes(tmp_path: Path, assets) -> None:  # noqa: ANN001
    student = _student(assets)
    evaluator = StudentEvaluator(assets[1], _CPU)
    log = MetricsLog(tmp_path, evaluator.reference_snr_db)
    traffic = RoundTraffic(student.state_dict(), knowledge_bytes=100)
    reply = RecordDict({
        "arrays": ArrayRecord(student.state_dict()),
        "metrics": MetricRecord({"train_total": 1.5, "train_accuracy": 0.5, "num-examples": 10}),
    })
    traffic.note_round(1, [reply], [])
    accuracy = evaluator.reference_accuracy(student)
    log.append(1, accuracy, traffic.clients, traffic.take_bytes_down(), traffic.bytes_up, rejected=traffic.rejected)
    [line] = _lines(tmp_path)
    assert (line["round"], line["train_loss"], line["train_accuracy"]) == (1, 1.5, 0.5)
    assert line["bytes_up"] == payload_bytes(reply) > 0
    assert line["bytes_down"] > 100  # the model sent down, plus the knowledge broadcast
    assert traffic.take_bytes_down() == traffic.model_bytes  # the broadcast counts once, in the first round
    assert 0.0 <= line["test_accuracy"] <= 1.0
    assert line["test_snr_db"] == evaluator.reference_snr_db


def test_a_resumed_log_keeps_the_rounds_up_to_the_checkpoint(tmp_path: Path) -> None:
    log = MetricsLog(tmp_path, 10.0)
    for server_round in (1, 2, 3):
        log.append(server_round, 0.5, [], bytes_down=0, bytes_up=0)
    MetricsLog(tmp_path, 10.0, resumed_after_round=2)
    assert [line["round"] for line in _lines(tmp_path)] == [1, 2]


def test_centralized_epoch_lines_move_no_bytes_and_results_say_centralized(tmp_path: Path, assets) -> None:  # noqa: ANN001
    config, experiment, store = assets
    student = _student(assets)
    evaluator = StudentEvaluator(experiment, _CPU)
    log = MetricsLog(tmp_path, evaluator.reference_snr_db)
    for epoch in (1, 2):
        metrics = {"train_total": 2.0, "train_accuracy": 0.25}
        log.append(1, evaluator.reference_accuracy(student), [metrics], bytes_down=0, bytes_up=0, epoch=epoch)
    assert [(line["round"], line["epoch"], line["bytes_down"], line["bytes_up"]) for line in _lines(tmp_path)] == [
        (1, 1, 0, 0), (1, 2, 0, 0),
    ]
    nodes = {7: {"partition-id": 0, "channel-profile": "awgn@0dB"}}
    results = finish_run(
        tmp_path, experiment, store, student, evaluator,
        nodes=nodes, knowledge_bytes=100, mode="centralized", started=log.started,
    )
    assert results["federation"]["mode"] == "centralized"
    assert results["federation"]["client_channel_profiles"] == {"0": "awgn@0dB"}
    assert results["evaluation"] == {
        "source": "channel.eval_channels",
        "links": [
            {"label": "awgn", "channel": "awgn", "k_factor": 3.0, "csi": "perfect", "params": {}},
            {"label": "rayleigh", "channel": "rayleigh", "k_factor": 3.0, "csi": "perfect", "params": {}},
        ],
        "snr_db": config.channel.eval_snr_db,
    }
    assert list(results["accuracy_vs_snr"]) == [link["label"] for link in results["evaluation"]["links"]]
    assert (tmp_path / "channel_uses.png").is_file() and (tmp_path / "accuracy_vs_snr.png").is_file()
    assert json.loads((tmp_path / "results.json").read_text())["federation"]["mode"] == "centralized"
    # Per-image outcomes agree with the accuracy table, on the test images named by their dataset indices.
    outcomes = read_outcomes(tmp_path)
    for label, curve in results["accuracy_vs_snr"].items():
        for snr_db, accuracy in curve.items():
            assert outcomes.correct[outcome_key(label, float(snr_db))].mean() == pytest.approx(accuracy)
    assert outcomes.seed == config.seed and outcomes.test_index.tolist() == experiment.splits.test.dataset_indices.tolist()
