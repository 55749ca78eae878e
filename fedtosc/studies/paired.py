"""Paired comparisons of two arms scored on the same test images with the same seeds.

Every study claim is a difference between arms, so it is read off per-image outcomes
(`fedtosc.outcomes`), not off overlapping ± bands: the accuracy difference pooled over seeds,
a 95% bootstrap interval that resamples images within each seed (one resample serves both arms,
so pairs stay pairs), and the exact McNemar p-value on the pooled discordant pairs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binom

__all__ = ["ArmOutcomes", "PairedDifference", "paired_difference"]

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0


@dataclass(frozen=True)
class ArmOutcomes:
    """One arm at one seed and one eval point: `correct` bool [N] for the images `test_index` int64 [N].

    `name` says which cell it came from (its run directory), for error messages.
    """

    name: str
    seed: int
    test_index: np.ndarray
    correct: np.ndarray


@dataclass(frozen=True)
class PairedDifference:
    """accuracy(first) − accuracy(second) over all (seed, image) pairs, with its interval."""

    difference: float
    low: float  # 95% bootstrap interval (percentile), images resampled within seeds
    high: float
    p_value: float  # exact two-sided McNemar on the pooled discordant pairs
    first_only: int  # pairs the first arm got right and the second wrong
    second_only: int
    num_pairs: int  # images x seeds
    num_seeds: int

    def columns(self, name: str) -> dict[str, float | int]:
        """CSV columns `<name>`, `<name>_low`, `<name>_high`, `<name>_p`."""
        return {name: self.difference, f"{name}_low": self.low, f"{name}_high": self.high, f"{name}_p": self.p_value}


def paired_difference(
    first: Sequence[ArmOutcomes],
    second: Sequence[ArmOutcomes],
    resamples: int = BOOTSTRAP_RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
    confidence: float = 0.95,
) -> PairedDifference:
    """Pair `first` and `second` seed by seed and compare them.

    Raises ValueError, naming both cells, when the arms were not run on the same seeds or a seed's
    two cells were scored on different test images (or in a different order).
    """
    pairs = _pairs_by_seed(first, second)
    # Per image the paired difference is +1, -1 or 0; resampling n images with replacement only
    # changes how many of each are drawn, so a multinomial draw per resample is the same bootstrap.
    rng = np.random.default_rng(seed)
    resampled_sums = np.zeros(resamples)
    first_only = second_only = num_pairs = 0
    for a, b in pairs:
        wins, losses, n = int(np.sum(a & ~b)), int(np.sum(~a & b)), len(a)
        counts = rng.multinomial(n, [wins / n, losses / n, (n - wins - losses) / n], size=resamples)
        resampled_sums += counts[:, 0] - counts[:, 1]
        first_only, second_only, num_pairs = first_only + wins, second_only + losses, num_pairs + n
    tail = 100.0 * (1.0 - confidence) / 2.0
    low, high = np.percentile(resampled_sums / num_pairs, [tail, 100.0 - tail])
    return PairedDifference(
        difference=(first_only - second_only) / num_pairs,
        low=float(low),
        high=float(high),
        p_value=_mcnemar_exact(first_only, second_only),
        first_only=first_only,
        second_only=second_only,
        num_pairs=num_pairs,
        num_seeds=len(pairs),
    )


def _pairs_by_seed(first: Sequence[ArmOutcomes], second: Sequence[ArmOutcomes]) -> list[tuple[np.ndarray, np.ndarray]]:
    by_seed = [_by_seed(arm) for arm in (first, second)]
    if not first or set(by_seed[0]) != set(by_seed[1]):
        names = [", ".join(o.name for o in arm) or "no cells" for arm in (first, second)]
        raise ValueError(
            f"cannot pair {names[0]} (seeds {sorted(by_seed[0])}) with {names[1]} (seeds {sorted(by_seed[1])}): "
            "a paired comparison needs both arms at the same seeds"
        )
    pairs = []
    for seed in sorted(by_seed[0]):
        a, b = by_seed[0][seed], by_seed[1][seed]
        if not np.array_equal(a.test_index, b.test_index):
            raise ValueError(f"cannot pair {a.name} with {b.name}: they were scored on different test images (seed {seed})")
        pairs.append((a.correct.astype(bool), b.correct.astype(bool)))
    return pairs


def _by_seed(arm: Sequence[ArmOutcomes]) -> dict[int, ArmOutcomes]:
    seeds: dict[int, ArmOutcomes] = {}
    for outcomes in arm:
        if outcomes.seed in seeds:
            raise ValueError(f"{seeds[outcomes.seed].name} and {outcomes.name} are the same arm at the same seed {outcomes.seed}")
        seeds[outcomes.seed] = outcomes
    return seeds


def _mcnemar_exact(first_only: int, second_only: int) -> float:
    """Two-sided exact McNemar: under no difference, each discordant pair goes either way with p = 1/2."""
    discordant = first_only + second_only
    if discordant == 0:
        return 1.0
    return float(min(1.0, 2.0 * binom.cdf(min(first_only, second_only), discordant, 0.5)))
