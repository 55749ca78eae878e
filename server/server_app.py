"""The ServerApp: what one fedtosc run is, top to bottom.

1. Load the resolved config the launcher wrote into the run directory.
2. Teacher and pre-stored knowledge: from cache, or built once now.
3. Learn which node holds which partition; send each node its knowledge slice, once.
4. Federated rounds (FedAvg/FedProx/FedAdam over screened updates); after every round the
   global student is evaluated and checkpointed (a resumed run starts from the checkpoint).
5. Final SNR sweep; results.json, metrics.jsonl and plots in the run directory.
"""

from __future__ import annotations

from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fedtosc.experiment import embedding_width, ensure_knowledge, experiment_student, load_experiment, load_teacher, resolve_device
from fedtosc.run_failure import clear_failure, record_failure
from fedtosc.run_record import RunRecorder, load_run_config
from server.broadcast import describe_nodes, send_knowledge, wait_for_nodes
from server.checkpoint import load_checkpoint, load_strategy_state, save_checkpoint
from server.screening import RoundFailedError
from server.strategies import make_strategy

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    run_dir = Path(str(context.run_config["run-dir"]))
    resume = bool(context.run_config.get("resume", False))
    config = load_run_config(run_dir)
    device = resolve_device(config.device)
    experiment = load_experiment(config)
    teacher = load_teacher(experiment, device)
    store = ensure_knowledge(experiment, teacher, device)

    federation = config.federation
    node_ids = wait_for_nodes(grid, federation.num_clients, federation.connect_timeout_s)
    nodes = describe_nodes(grid, node_ids, config)
    knowledge_bytes = 0
    if config.knowledge.mode == "prestored":
        knowledge_bytes = send_knowledge(grid, nodes, store, experiment.plan.knowledge_indices, federation.round_timeout_s)

    torch.manual_seed(config.seed)  # the same seed gives the same initial global model, run after run
    student = experiment_student(experiment, embedding_width(config, store))
    rounds_done = 0
    if resume:
        rounds_done, state = load_checkpoint(run_dir)
        student.load_state_dict(state)
    recorder = RunRecorder(
        run_dir, experiment, store, nodes, knowledge_bytes, device, resumed_after_round=rounds_done if resume else None
    )

    def evaluate_and_checkpoint(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        # Flower numbers this session's rounds from 1; a resumed run continues the original count.
        overall_round = rounds_done + server_round if server_round else 0
        metrics = recorder.evaluate_round(overall_round, arrays)
        if server_round > 0:  # after the metrics line: a resume drops lines past the checkpoint
            save_checkpoint(run_dir, overall_round, arrays.to_torch_state_dict(), strategy.state_arrays())
        return metrics

    strategy = make_strategy(config, recorder.aggregate_train_metrics, recorder.note_rejections, nodes, rounds_done)
    if resume:
        strategy.load_state_arrays(load_strategy_state(run_dir))
    clear_failure(run_dir)
    try:
        result = strategy.start(
            grid=grid,
            initial_arrays=ArrayRecord(student.state_dict()),
            num_rounds=federation.rounds - rounds_done,
            timeout=federation.round_timeout_s,
            train_config=ConfigRecord({"round-offset": rounds_done}),
            evaluate_fn=evaluate_and_checkpoint,
        )
    except RoundFailedError as error:
        record_failure(run_dir, str(error))  # the launcher's last line names the lost nodes
        raise
    if result.arrays is not None and len(result.arrays) > 0:
        student.load_state_dict(result.arrays.to_torch_state_dict())
    recorder.finish(student)
