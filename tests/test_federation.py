"""Federation in depth: crashing and poisoned clients, resume after a server failure, partitions."""

import json
import re
import time
from dataclasses import replace

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from fedtosc.cli import main
from fedtosc.config import FederationConfig, load_config
from fedtosc.data import partition_indices
from fedtosc.digests import state_digest
from fedtosc.faults import parse_faults
from fedtosc.results import read_results
from server.checkpoint import CheckpointError, load_checkpoint, load_strategy_state, save_checkpoint
from server.screening import update_problem


def _rounds(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _small_run(tmp_path, digits_teacher, name, *extra):
    run_dir = tmp_path / name
    args = [
        "run",
        f"output_dir={run_dir}",
        *digits_teacher,
        "train.local_epochs=1",
        "channel.eval_snr_db=[10]",
        "channel.eval_channels=[awgn]",
        *extra,
    ]
    return main(args), run_dir


# --- fast: the pieces ------------------------------------------------------------------------


def test_screening_accepts_a_matching_update_and_names_each_problem():
    reference = {"w": ((2, 2), "float32"), "steps": ((), "int64")}
    good = ArrayRecord({"w": Array(np.ones((2, 2), np.float32)), "steps": Array(np.array(3, np.int64))})
    assert update_problem(good, reference) is None
    nan = ArrayRecord({"w": Array(np.full((2, 2), np.nan, np.float32)), "steps": Array(np.array(3, np.int64))})
    assert "NaN" in update_problem(nan, reference)
    wrong_shape = ArrayRecord({"w": Array(np.ones((3, 2), np.float32)), "steps": Array(np.array(3, np.int64))})
    assert "w is float32[3, 2]" in update_problem(wrong_shape, reference)
    wrong_dtype = ArrayRecord({"w": Array(np.ones((2, 2), np.float64)), "steps": Array(np.array(3, np.int64))})
    assert "float64" in update_problem(wrong_dtype, reference)
    missing = ArrayRecord({"w": Array(np.ones((2, 2), np.float32))})
    assert "missing ['steps']" in update_problem(missing, reference)


def test_checkpoint_round_trips_and_a_corrupt_one_is_named(tmp_path):
    # A 0-d moment (that of a BatchNorm's num_batches_tracked) stays 0-d: a resumed run's global
    # model keeps the shapes of the uninterrupted run's.
    moments = {"m_t/w": np.ones(4, np.float32), "m_t/steps": np.array(2.0, np.float32)}
    save_checkpoint(tmp_path, 3, {"w": torch.arange(4.0)}, moments)
    server_round, state = load_checkpoint(tmp_path)
    assert server_round == 3 and list(state) == ["w"] and torch.equal(state["w"], torch.arange(4.0))
    restored = load_strategy_state(tmp_path)
    assert restored.keys() == moments.keys()
    assert all(restored[name].shape == moments[name].shape for name in moments)
    path = tmp_path / "checkpoint.safetensors"
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0x01  # a flipped byte in the data region
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="does not match its recorded sha256 digest"):
        load_checkpoint(tmp_path)
    path.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable fedtosc checkpoint"):
        load_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nowhere")


def test_the_state_digest_is_equal_exactly_when_the_states_are_equal_bit_for_bit():
    state = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "steps": np.array(3, np.int64)}
    assert state_digest(state) == state_digest({name: array.copy() for name, array in reversed(state.items())})
    flipped = state["w"].copy()
    flipped.view(np.uint32)[1, 2] ^= 1  # the lowest mantissa bit of one weight
    assert state_digest({**state, "w": flipped}) != state_digest(state)
    assert state_digest({**state, "w": state["w"].reshape(3, 2)}) != state_digest(state)
    assert state_digest({**state, "w": state["w"].astype(np.float64)}) != state_digest(state)
    assert state_digest({"v": state["w"], "steps": state["steps"]}) != state_digest(state)


def test_fault_spec_parses_and_rejects_malformed_entries():
    assert parse_faults("crash:1@2, nan:0@1") == {(1, 2): "crash", (0, 1): "nan"}
    with pytest.raises(ValueError, match="explode:1@2"):
        parse_faults("explode:1@2")


@pytest.mark.parametrize("partitioner", ["iid", "dirichlet", "pathological"])
def test_partitions_cover_every_sample_exactly_once(partitioner):
    labels = np.random.default_rng(0).integers(0, 10, size=600)
    federation = replace(FederationConfig(), num_clients=5, partitioner=partitioner, dirichlet_alpha=0.3, classes_per_client=2)
    parts = partition_indices(labels, federation, seed=0)
    assert len(parts) == 5
    joined = np.sort(np.concatenate(parts))
    if partitioner == "pathological":
        # Pathological partitions hold only their assigned classes, so samples may be left out.
        assert len(np.unique(joined)) == len(joined)
        assert all(len(np.unique(labels[p])) <= 2 for p in parts)
    else:
        assert np.array_equal(joined, np.arange(600))


def test_dirichlet_partitions_are_skewed_and_iid_ones_are_not():
    labels = np.repeat(np.arange(10), 60)
    def skew(partitioner):
        federation = replace(FederationConfig(), num_clients=4, partitioner=partitioner, dirichlet_alpha=0.1)
        shares = [np.bincount(labels[p], minlength=10) / len(p) for p in partition_indices(labels, federation, 0)]
        return float(np.mean([np.abs(s - 0.1).sum() for s in shares]))
    assert skew("dirichlet") > 3 * skew("iid")


def test_snr_aware_weights_favour_better_links():
    from fedtosc.channels import parse_channel_profiles
    from fedtosc.federation.weighting import snr_aware_weight

    low, high = parse_channel_profiles("awgn:0,awgn:20", 2)
    assert snr_aware_weight(100, high, 0.5) > snr_aware_weight(100, low, 0.5) == 100.0


def test_bad_fault_spec_is_a_config_error():
    from fedtosc.config import ConfigError

    with pytest.raises(ConfigError, match="federation.inject_faults"):
        load_config(["federation.inject_faults=boom"])


# --- slow: real Flower simulations -----------------------------------------------------------

# A hang guard per simulation (pytest-timeout), no timing claim: one takes about a minute on two idle
# cores, and several times that beside the rest of `make test` and whatever else the machine runs.
_ONE_RUN_LIMIT_S = 900


@pytest.mark.slow
@pytest.mark.timeout(_ONE_RUN_LIMIT_S)
def test_crashing_and_poisoned_clients_are_rejected_and_the_round_completes(tmp_path, digits_teacher):
    code, run_dir = _small_run(
        tmp_path, digits_teacher, "faults", "federation.num_clients=3", "channel.clients='awgn:0,awgn:10,awgn:20'",
        "federation.rounds=2", "federation.min_train_clients=1", "federation.inject_faults='crash:1@1,nan:2@1'",
    )
    assert code == 0
    first, second = _rounds(run_dir)
    problems = " | ".join(r["problem"] for r in first["rejected"])
    assert len(first["rejected"]) == 2
    assert "partition 1 crashes in round 1" in problems and "NaN" in problems
    assert [c["partition-id"] for c in first["clients"]] == [0]
    assert second["rejected"] == [] and len(second["clients"]) == 3
    assert np.isfinite(read_results(run_dir)["accuracy_vs_snr"]["awgn"]["10.0"])


@pytest.mark.slow
@pytest.mark.timeout(3 * _ONE_RUN_LIMIT_S)  # three runs
def test_same_seed_same_weights_and_a_resumed_run_equals_an_uninterrupted_one_bit_for_bit(tmp_path, digits_teacher, capsys):
    from safetensors.torch import load_file

    # 4 clients, half sampled per round, FedAdam (server moments): sampling, aggregation order and
    # strategy state all have to be reproduced for the weights to match to the bit. Two rounds
    # suffice: the resumed round 2 starts from round 1's weights, moments and round counter.
    # Two Ray actors (ray.num_cpus=null: both cores), so replies can arrive in either order.
    common = ("strategy=fedadam", "federation.fraction_train=0.5", "federation.rounds=2", "ray.num_cpus=null")
    code, straight_dir = _small_run(tmp_path, digits_teacher, "straight", *common)
    assert code == 0
    # Round 2 fails outright (every partition crashes): the server stops after round 1.
    code, run_dir = _small_run(tmp_path, digits_teacher, "resumed", *common, "federation.inject_faults='crash:0@2,crash:1@2,crash:2@2,crash:3@2'")
    assert code == 1
    err = capsys.readouterr().err
    # One line names the lost nodes (node id, partition, channel) and how to finish the run.
    assert re.search(r"round 2: 0 usable client updates.*Lost: node \d+ \(partition \d, awgn@\d+dB\)", err)
    assert f"fedtosc run resume={run_dir}" in err
    assert not (run_dir / "results.json").exists()
    assert load_checkpoint(run_dir)[0] == 1
    # Round 1 of a second run from the same seed: the same global weights as the first run's.
    assert [r["global_sha256"] for r in _rounds(run_dir)] == [_rounds(straight_dir)[0]["global_sha256"]]
    assert main(["run", f"resume={run_dir}", "federation.inject_faults=''"]) == 0
    straight_rounds, resumed_rounds = _rounds(straight_dir), _rounds(run_dir)
    assert [r["round"] for r in resumed_rounds] == [1, 2]
    assert [sorted(c["partition-id"] for c in r["clients"]) for r in resumed_rounds] == [
        sorted(c["partition-id"] for c in r["clients"]) for r in straight_rounds
    ]
    # After every round, the resumed run's global weights are the uninterrupted run's, bit for bit.
    assert [r["global_sha256"] for r in resumed_rounds] == [r["global_sha256"] for r in straight_rounds]
    assert straight_rounds[0]["global_sha256"] != straight_rounds[1]["global_sha256"]  # round 2 changed them
    straight, resumed = (load_file(str(d / "student.safetensors")) for d in (straight_dir, run_dir))
    assert straight.keys() == resumed.keys()
    assert all(torch.equal(straight[name], resumed[name]) for name in straight)
    assert state_digest({name: tensor.numpy() for name, tensor in resumed.items()}) == resumed_rounds[-1]["global_sha256"]


def test_transfer_set_mode_keeps_private_data_out_of_the_knowledge():
    from fedtosc.experiment import load_experiment

    config = load_config(["dataset.transfer_fraction=0.2"])
    plan = load_experiment(config).plan
    private = np.concatenate(plan.client_indices)
    assert len(plan.transfer_indices) > 0
    assert np.intersect1d(plan.distillation_indices, private).size == 0
    assert np.array_equal(plan.distillation_indices, plan.transfer_indices)
    assert all(np.array_equal(plan.knowledge_indices(p), plan.transfer_indices) for p in range(4))
    assert not plan.labelled[plan.transfer_indices].any()


def test_transfer_set_rows_alone_carry_the_kd_term():
    from fedtosc.config import LossConfig
    from fedtosc.losses import ib_distillation_loss

    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])
    teacher = torch.tensor([[0.0, 0.0], [0.5, 0.5]])  # row 0 has no knowledge (zeros)
    common = dict(logits=logits, mu=torch.zeros(2, 2), logvar=torch.zeros(2, 2), labels=torch.tensor([0, 1]),
                  labelled=torch.tensor([False, False]), teacher_probs=teacher, temperature=1.0, beta=0.0)
    masked = ib_distillation_loss(LossConfig(), with_knowledge=torch.tensor([False, True]), **common)
    only_row_1 = ib_distillation_loss(LossConfig(), **{**common, "logits": logits[1:], "teacher_probs": teacher[1:],
                                                      "labels": torch.tensor([1]), "labelled": torch.tensor([False]),
                                                      "mu": torch.zeros(1, 2), "logvar": torch.zeros(1, 2)})
    assert torch.isclose(masked.kd, only_row_1.kd)


def test_too_few_nodes_fail_with_a_clear_error_after_the_timeout_and_enough_go_on():
    from server.broadcast import wait_for_nodes

    class TwoNodeGrid:
        def get_node_ids(self):
            return [1, 2]

    assert wait_for_nodes(TwoNodeGrid(), required=2, timeout_s=0.1, enough=2) == [1, 2]
    started = time.monotonic()
    with pytest.raises(TimeoutError, match="only 2 of 4 required SuperNodes connected within 1 s, fewer than the 3"):
        wait_for_nodes(TwoNodeGrid(), required=4, timeout_s=1.0, enough=3)
    # It waited out its timeout (a lower bound cannot flake); a hang would hit pytest's timeout.
    assert time.monotonic() - started >= 1.0
    # A box that never came (it refused its bad data, say) is a lost node: the others suffice.
    assert wait_for_nodes(TwoNodeGrid(), required=3, timeout_s=0.1, enough=2) == [1, 2]
