"""The ServerApp: what one fedtosc run is, top to bottom.

1. Load the resolved config the launcher wrote into the run directory.
2. Teacher and pre-stored knowledge: from cache, or built once now.
3. Learn which node holds which partition; send each node its knowledge slice, once.
4. Federated rounds (FedAvg/FedProx/FedAdam); the global student is evaluated every round.
5. Final SNR sweep; results.json, metrics.jsonl and plots in the run directory.
"""

from __future__ import annotations

from pathlib import Path

from flwr.app import ArrayRecord, ConfigRecord, Context
from flwr.serverapp import Grid, ServerApp

from fedtosc.experiment import ensure_knowledge, load_experiment, load_teacher, resolve_device
from fedtosc.models.student import build_student
from fedtosc.run_record import RunRecorder, load_run_config
from server.broadcast import describe_nodes, send_knowledge, wait_for_nodes
from server.strategies import make_strategy

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_dir = Path(str(context.run_config["run-dir"]))
    config = load_run_config(run_dir)
    device = resolve_device(config.device)
    experiment = load_experiment(config)
    teacher = load_teacher(experiment, device)
    store = ensure_knowledge(experiment, teacher, device)

    federation = config.federation
    node_ids = wait_for_nodes(grid, federation.num_clients, federation.round_timeout_s)
    nodes = describe_nodes(grid, node_ids, config)
    knowledge_bytes = 0
    if config.knowledge.mode == "prestored":
        knowledge_bytes = send_knowledge(grid, nodes, store, experiment.plan.client_indices, federation.round_timeout_s)

    train_split = experiment.splits.train
    student = build_student(train_split.image_shape[0], len(train_split.class_names), config.student)
    recorder = RunRecorder(run_dir, experiment, store, nodes, knowledge_bytes, device)
    strategy = make_strategy(config, recorder.aggregate_train_metrics)
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(student.state_dict()),
        num_rounds=federation.rounds,
        timeout=federation.round_timeout_s,
        train_config=ConfigRecord({"lr": config.train.lr}),
        evaluate_fn=recorder.evaluate_round,
    )
    student.load_state_dict(result.arrays.to_torch_state_dict())
    recorder.finish(student)
