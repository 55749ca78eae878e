"""One client's round: the global student trained on the node's data through the node's channel.

The ClientApp runs it for every train message, and benchmarks/federation.py runs it in its plain
loop without Flower, so both measure and train exactly the same update.
"""

from __future__ import annotations

import torch

from fedtosc.channels import ChannelProfile, seed_channels
from fedtosc.experiment import Experiment, experiment_student, load_teacher
from fedtosc.faults import InjectedCrash, fault_for
from fedtosc.federation.weighting import AGGREGATION_WEIGHT_KEY, nominal_snr_db, snr_aware_weight
from fedtosc.training import LocalData, NonFiniteLossError, train_student

__all__ = ["run_client_round"]


def run_client_round(
    experiment: Experiment,
    partition_id: int,
    profile: ChannelProfile,
    data: LocalData,
    global_state: dict[str, torch.Tensor],
    server_round: int,
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], dict[str, float | int]]:
    """(the trained student's state dict on the CPU, this client's metrics for the server).

    `server_round` counts from the run's start, a resumed run included. Faults configured in
    `federation.inject_faults` for this partition and round happen here.
    """
    config = experiment.config
    student = experiment_student(experiment, data.embedding_width)
    student.load_state_dict(global_state)
    proximal = [p.detach().clone() for p in student.parameters()] if config.strategy.name == "fedprox" else None
    online_teacher = load_teacher(experiment, device) if config.knowledge.mode == "online" else None
    seed = config.seed * 100_003 + partition_id * 1_009 + server_round
    # Every random draw of this update (data order, SNRs, z ~ q(z|x), channel noise) depends on
    # (seed, partition, round) alone, not on what a reused Ray actor ran before: a resumed run
    # repeats the rounds an uninterrupted one would have run.
    generator = torch.Generator().manual_seed(seed)
    if device.type == "cpu":
        # The same CPU stream as torch.manual_seed, without its lazy seeding of every CUDA and XPU
        # device, which formats the caller's stack each time: 1-4 ms of every client message.
        torch.default_generator.manual_seed(seed)
    else:
        torch.manual_seed(seed)
    seed_channels(seed)
    fault = fault_for(config.federation.inject_faults, partition_id, server_round)
    if fault == "crash":
        raise InjectedCrash(f"partition {partition_id} crashes in round {server_round} (federation.inject_faults)")
    try:
        metrics = train_student(
            student,
            data,
            profile=profile,
            channel=profile.make_channel(config.channel.block_length),
            config=config,
            server_round=server_round,
            generator=generator,
            device=device,
            online_teacher=online_teacher,
            proximal_reference=proximal,
        )
    except NonFiniteLossError as error:
        # The server logs this reason and rejects the update; it must say which client diverged.
        raise NonFiniteLossError(f"partition {partition_id} ({profile.describe()}): {error}") from error
    if fault == "nan":
        with torch.no_grad():
            next(student.parameters()).fill_(float("nan"))
    metrics.update(
        {
            "num-examples": len(data),
            AGGREGATION_WEIGHT_KEY: snr_aware_weight(len(data), profile, config.strategy.snr_weight_alpha),
            "partition-id": partition_id,
            "snr-db": nominal_snr_db(profile),
        }
    )
    return student.cpu().state_dict(), metrics
