"""The end of a run, federated or centralized: the final SNR sweep, results.json, the student, the plots.

results.json's schema is in the README; the same keys are written whichever way the student
was trained, so `fedtosc run` and `fedtosc train` compare line for line.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from safetensors.torch import save_file

from fedtosc.channels import client_profiles
from fedtosc.evaluation import StudentEvaluator, encoder_latency_ms, model_size
from fedtosc.experiment import Experiment
from fedtosc.federation.weighting import nominal_snr_db
from fedtosc.knowledge.codecs import HEAD_BIAS, HEAD_WEIGHT
from fedtosc.knowledge.store import KnowledgeStore
from fedtosc.models.student import StudentCodec
from fedtosc.outcomes import write_outcomes
from fedtosc.results import plot_accuracy_vs_snr, plot_channel_uses, write_json_atomic

__all__ = ["finish_run"]

_NODE_FACTS = ("num-examples", "num-labelled", "class-counts", "broadcast-bytes", "has-payload", "rejoined-from-cache")


def finish_run(
    run_dir: Path,
    experiment: Experiment,
    store: KnowledgeStore,
    student: StudentCodec,
    evaluator: StudentEvaluator,
    *,
    nodes: dict,
    knowledge_bytes: int,
    mode: str,
    started: float,
    payload_bytes: int | None = None,
    placement: dict[str, dict] | None = None,
) -> dict:
    """Sweep the final student; write student.safetensors, outcomes.safetensors, results.json and the
    plots; return the results.

    `nodes`: node id -> its describe reply (partition-id, channel-profile, counts, has-payload) plus
    broadcast-bytes and rejoined-from-cache;
    `knowledge_bytes`: the broadcast's size; `mode`: federated | centralized; `started`:
    `time.perf_counter()` when training began; `payload_bytes`: the shared payload's size
    (transfer_set / digest delivery); `placement`: client rounds per node
    (fedtosc.federation.placement.total_placement; None when no clients ran).
    """
    config = experiment.config
    links, accuracy, channel_uses, correct = evaluator.sweep(student)
    write_outcomes(run_dir, config.seed, experiment.splits.test.dataset_indices, correct)
    save_file({k: v.contiguous().cpu() for k, v in student.state_dict().items()}, str(run_dir / "student.safetensors"))
    header = store.header
    results = {
        "teacher": {key: header.extra["teacher"][key] for key in ("name", "params", "accuracy")},
        "student": {
            **model_size(student),
            "encoder_latency_ms_batch1": encoder_latency_ms(student, experiment.splits.train.image_shape, 1),
        },
        "knowledge": {
            "mode": config.knowledge.mode,
            "codec": header.codec,
            "codec_params": header.codec_params,
            "views": header.views,
            "bytes_per_sample": store.bytes_per_sample,
            # The teacher head an embedding store carries, sent once per node inside broadcast_bytes.
            "teacher_head_bytes": sum(
                array.nbytes for name, array in store.shared().items() if name in (HEAD_WEIGHT, HEAD_BIAS)
            ),
            "num_samples": header.num_samples,
            "build_seconds": header.extra["build_seconds"],
            "delivery": config.knowledge.delivery,
            "broadcast_bytes": knowledge_bytes,
            # transfer_set / digest: the one payload every node without it cached receives
            "payload_bytes": payload_bytes,
        },
        "federation": {
            "mode": mode,
            "num_clients": config.federation.num_clients,
            "rounds": config.federation.rounds,
            "strategy": config.strategy.name,
            "client_snr_db": [nominal_snr_db(p) for p in client_profiles(config.channel, config.federation.num_clients)],
            "client_channel_profiles": {str(n["partition-id"]): n["channel-profile"] for n in nodes.values()},
            # What the server learnt of each node (counts only; class counts if the node allowed it),
            # the bytes it sent it before the rounds, and how often it came back from a restart and
            # trained from its cached payload, sent nothing again.
            "nodes": {str(n["partition-id"]): {key.replace("-", "_"): value for key, value in n.items() if key in _NODE_FACTS}
                      for n in nodes.values()},
            # Where client rounds ran: per Ray node (simulation) or host (SuperNode), docs/scale-out.md.
            "placement": placement,
        },
        "evaluation": {
            # Where the links came from: an explicit list, or the clients' own links (eval_channels=null).
            "source": "channel.clients" if config.channel.eval_channels is None else "channel.eval_channels",
            "links": [{"label": link.describe(), **dataclasses.asdict(link), "params": dict(link.params)} for link in links],
            "snr_db": [float(snr_db) for snr_db in config.channel.eval_snr_db],
        },
        "accuracy_vs_snr": accuracy,
        "channel_uses": channel_uses,
        "wall_seconds": time.perf_counter() - started,
    }
    write_json_atomic(run_dir / "results.json", results)
    plot_accuracy_vs_snr(results, run_dir / "accuracy_vs_snr.png")
    plot_channel_uses(results, run_dir / "channel_uses.png")
    return results
