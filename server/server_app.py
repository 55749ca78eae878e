"""The ServerApp: what one fedtosc run is, top to bottom.

1. Load the resolved config the launcher wrote into the run directory.
2. Teacher and pre-stored knowledge: from cache, or built once now.
3. Describe the run to every node (counts and channel come back); send each node, once, what
   it lacks: its knowledge slice, or the shared transfer_set / digest payload (knowledge.delivery).
4. Federated rounds (FedAvg/FedProx/FedAdam over screened updates); after every round the
   global student is evaluated and checkpointed (a resumed run starts from the checkpoint).
5. Final SNR sweep; results.json, metrics.jsonl and plots in the run directory.
"""

from __future__ import annotations

from pathlib import Path

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, MetricRecord
from flwr.serverapp import Grid, ServerApp

from fedtosc.digests import state_digest
from fedtosc.evaluation import StudentEvaluator
from fedtosc.experiment import embedding_width, experiment_student, prepare_experiment, resolve_device
from fedtosc.metrics_log import MetricsLog
from fedtosc.run_config import load_run_config
from fedtosc.run_results import finish_run
from fedtosc.federation.payloads import payload_bytes, payload_fingerprint, shared_payload
from fedtosc.federation.placement import total_placement
from server.broadcast import describe_nodes, plan_broadcast, run_description, send_knowledge, wait_for_nodes
from fedtosc.run_failure import clear_failure, record_failure
from server.checkpoint import load_checkpoint, load_strategy_state, save_checkpoint
from server.prompt_grid import PromptGrid
from server.round_traffic import RoundTraffic
from server.screening import RoundFailedError
from server.strategies import make_strategy, min_successes

app = ServerApp()


@app.main()
def main(grid: Grid, context: Context) -> None:
    grid = PromptGrid(grid)  # a round ends when its last reply comes, not at Flower's next 3 s poll
    run_dir = Path(str(context.run_config["run-dir"]))
    resume = bool(context.run_config.get("resume", False))
    config = load_run_config(run_dir)
    device = resolve_device(config.device)
    experiment, _, store = prepare_experiment(config, device)

    federation = config.federation
    node_ids = wait_for_nodes(grid, federation.num_clients, federation.connect_timeout_s, min_successes(config))
    shared = shared_payload(experiment, store) if config.knowledge.mode == "prestored" else None
    fingerprint = payload_fingerprint(shared) if shared is not None else ""
    description = run_description(experiment, node_ids, fingerprint)
    nodes = describe_nodes(grid, description, federation.round_timeout_s, min_successes(config))
    sent = send_knowledge(grid, plan_broadcast(config, nodes, store, experiment, shared), federation.round_timeout_s)
    for node_id, entry in nodes.items():
        entry["broadcast-bytes"] = sent.get(node_id, 0)
    knowledge_bytes = sum(sent.values())

    torch.manual_seed(config.seed)  # the same seed gives the same initial global model, run after run
    student = experiment_student(experiment, embedding_width(config, store))
    rounds_done = 0
    if resume:
        rounds_done, state = load_checkpoint(run_dir)
        student.load_state_dict(state)
    evaluator = StudentEvaluator(experiment, device)
    log = MetricsLog(run_dir, evaluator.reference_snr_db, resumed_after_round=rounds_done if resume else None)
    traffic = RoundTraffic(student.state_dict(), knowledge_bytes, federation.wire_dtype)

    def evaluate_and_checkpoint(server_round: int, arrays: ArrayRecord) -> MetricRecord:
        # Flower numbers this session's rounds from 1; a resumed run continues the original count.
        overall_round = rounds_done + server_round if server_round else 0
        state = arrays.to_torch_state_dict()
        student.load_state_dict(state)
        accuracy = evaluator.reference_accuracy(student)
        if server_round > 0:  # the initial model gets no line
            log.append(
                overall_round, accuracy, traffic.clients, traffic.take_bytes_down(), traffic.bytes_up,
                rejected=traffic.rejected, placement=traffic.placement,
                # The global weights' digest: a rerun or a resumed run matches the uninterrupted one line by line.
                global_sha256=state_digest({name: tensor.numpy() for name, tensor in state.items()}),
            )
            # After the metrics line: a resume drops lines past the checkpoint.
            save_checkpoint(run_dir, overall_round, state, strategy.state_arrays())
        return MetricRecord({"test_accuracy": accuracy})

    # Every train message carries the node's description again: a node restarted mid-run rejoins from it.
    strategy = make_strategy(config, traffic.note_round, nodes, rounds_done, node_records=lambda node: description.get(node, {}))
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
    for entry in nodes.values():
        entry["rejoined-from-cache"] = traffic.rejoins[int(entry["partition-id"])]
    if result.arrays is not None and len(result.arrays) > 0:
        student.load_state_dict(result.arrays.to_torch_state_dict())
    finish_run(
        run_dir, experiment, store, student, evaluator,
        nodes=nodes, knowledge_bytes=knowledge_bytes, mode="federated", started=log.started,
        payload_bytes=payload_bytes(shared) if shared is not None else None,
        # Every round's line, a resumed run's earlier ones included.
        placement=total_placement(line.get("placement", {}) for line in log.lines()),
    )
