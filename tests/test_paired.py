"""Specification of paired comparisons: per-image outcomes of two arms at the same seeds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from fedtosc.outcomes import outcome_key, read_outcomes, write_outcomes
from fedtosc.studies.paired import ArmOutcomes, paired_difference


def _arm(name: str, seed: int, correct: list[bool] | np.ndarray, test_index: np.ndarray | None = None) -> ArmOutcomes:
    correct = np.asarray(correct, dtype=bool)
    return ArmOutcomes(name, seed, np.arange(len(correct)) if test_index is None else test_index, correct)


def test_hand_computed_difference_counts_and_mcnemar_p() -> None:
    # Seed 0: the first arm alone right on images 1 and 2; seed 1: alone right on 0, the second alone on 3.
    first = [_arm("full/0", 0, [1, 1, 1, 0]), _arm("full/1", 1, [1, 0, 1, 0])]
    second = [_arm("base/0", 0, [1, 0, 0, 0]), _arm("base/1", 1, [0, 0, 1, 1])]
    result = paired_difference(first, second)
    assert (result.first_only, result.second_only, result.num_pairs, result.num_seeds) == (3, 1, 8, 2)
    assert result.difference == pytest.approx((3 - 1) / 8)
    assert result.p_value == pytest.approx(2 * (1 + 4) / 16)  # 2 P(Binomial(4, 1/2) <= 1)
    assert result.low <= result.difference <= result.high


def test_identical_pairs_give_a_degenerate_interval() -> None:
    result = paired_difference([_arm("a", 0, [1] * 10)], [_arm("b", 0, [0] * 10)])
    assert (result.difference, result.low, result.high) == (1.0, 1.0, 1.0)
    assert result.p_value == pytest.approx(2 * 0.5**10)


def _correlated_arms(rng: np.random.Generator, accuracy_first: float, accuracy_second: float, seeds: int, images: int):
    """Arms that share per-image difficulty (as paired arms do), with the given accuracies."""
    first, second = [], []
    for seed in range(seeds):
        difficulty = rng.random(images)
        first.append(_arm(f"first/{seed}", seed, difficulty < accuracy_first))
        # Symmetric noise on the difficulty: images near the threshold flip either way, and the
        # second arm's accuracy stays accuracy_second.
        jitter = rng.uniform(-0.1, 0.1, images)
        second.append(_arm(f"second/{seed}", seed, difficulty + jitter < accuracy_second))
    return first, second


def test_a_real_difference_is_detected_and_a_null_one_is_not() -> None:
    rng = np.random.default_rng(1)
    first, second = _correlated_arms(rng, 0.80, 0.70, seeds=3, images=400)
    real = paired_difference(first, second)
    assert real.low > 0 and real.p_value < 0.01
    first, second = _correlated_arms(rng, 0.75, 0.75, seeds=3, images=400)
    null = paired_difference(first, second)
    assert null.low <= 0 <= null.high and null.p_value > 0.05
    assert null.high - null.low < real.difference  # images pooled over seeds give a tight interval


def test_the_bootstrap_is_reproducible() -> None:
    rng = np.random.default_rng(2)
    first, second = _correlated_arms(rng, 0.8, 0.75, seeds=2, images=100)
    assert paired_difference(first, second) == paired_difference(first, second)


def test_cells_on_different_seeds_or_test_images_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match=r"cannot pair full/0 \(seeds \[0\]\) with base/1 \(seeds \[1\]\)"):
        paired_difference([_arm("full/0", 0, [1, 0])], [_arm("base/1", 1, [1, 0])])
    with pytest.raises(ValueError, match="cannot pair full/0 with base/0: they were scored on different test images"):
        paired_difference([_arm("full/0", 0, [1, 0])], [_arm("base/0", 0, [1, 0], test_index=np.array([1, 0]))])


def test_outcomes_file_round_trips(tmp_path: Path) -> None:
    correct = {outcome_key("rayleigh[csi=none]", 5): torch.tensor([True, False, True])}
    write_outcomes(tmp_path, 3, torch.tensor([7, 2, 9]), correct)
    outcomes = read_outcomes(tmp_path)
    assert outcomes.seed == 3 and outcomes.test_index.tolist() == [7, 2, 9]
    assert outcomes.correct["rayleigh[csi=none]@5.0"].tolist() == [True, False, True]
