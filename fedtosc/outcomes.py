"""Per-test-image outcomes of a run's final sweep: which test images the student got right.

A run writes them beside results.json as `outcomes.safetensors` (`fedtosc.run_results`); paired
comparisons between arms read them back (`fedtosc.studies.paired`). One uint8 tensor [N] per
(eval link, SNR), 1 where the prediction was right, plus the test images' dataset indices, so a
comparison can check that two runs were scored on the same images in the same order.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fedtosc.atomic_write import atomic_path

__all__ = ["OUTCOMES_FILE", "RunOutcomes", "outcome_key", "read_outcomes", "write_outcomes"]

OUTCOMES_FILE = "outcomes.safetensors"
_TEST_INDEX = "test_index"
_CORRECT_PREFIX = "correct/"


def outcome_key(link_label: str, snr_db: float) -> str:
    """The key of one (link, SNR) point, labelled as in results.json: `awgn@10.0`."""
    return f"{link_label}@{float(snr_db)}"


@dataclass(frozen=True)
class RunOutcomes:
    """What a run's outcomes file holds: its seed, test_index int64 [N], and per key a bool [N]."""

    seed: int
    test_index: np.ndarray
    correct: dict[str, np.ndarray]


def write_outcomes(run_dir: Path, seed: int, test_index: torch.Tensor, correct: dict[str, torch.Tensor]) -> None:
    """Write `run_dir/outcomes.safetensors` atomically; `correct` maps outcome_key -> bool [N]."""
    tensors = {f"{_CORRECT_PREFIX}{key}": flags.to(torch.uint8).cpu().contiguous() for key, flags in correct.items()}
    tensors[_TEST_INDEX] = test_index.to(torch.int64).cpu().contiguous()
    with atomic_path(run_dir / OUTCOMES_FILE, fsync=True) as temp:
        save_file(tensors, str(temp), metadata={"seed": str(seed)})


def read_outcomes(run_dir: Path) -> RunOutcomes:
    """Read `run_dir/outcomes.safetensors`; OSError when the run has none."""
    path = run_dir / OUTCOMES_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: the run predates per-image outcomes, or did not finish")
    with safe_open(str(path), framework="np") as stream:
        seed = int(stream.metadata()["seed"])
        tensors = {key: stream.get_tensor(key) for key in stream.keys()}  # noqa: SIM118 - safe_open is not a dict
    correct = {key[len(_CORRECT_PREFIX) :]: value.astype(bool) for key, value in tensors.items() if key.startswith(_CORRECT_PREFIX)}
    return RunOutcomes(seed, tensors[_TEST_INDEX], correct)
