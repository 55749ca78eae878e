"""Server-side checkpoints: the global student after every round, for `fedtosc run resume=<run dir>`.

One safetensors file (no pickle), replaced atomically, with the round number in its metadata.
The strategy's own state (FedAdam's server moments) rides along under `strategy/` names, so a
resumed run continues exactly where the uninterrupted one would be.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fedtosc.atomic_write import atomic_path
from fedtosc.digests import DIGESTS_KEY, digest_problem, tensor_digests

__all__ = ["CHECKPOINT_FILE", "CheckpointError", "load_checkpoint", "load_strategy_state", "save_checkpoint"]

CHECKPOINT_FILE = "checkpoint.safetensors"
_STRATEGY_PREFIX = "strategy/"


class CheckpointError(ValueError):
    """A checkpoint is missing or unreadable; the message names the file and the way out."""


def save_checkpoint(
    run_dir: Path,
    server_round: int,
    state: dict[str, torch.Tensor],
    strategy_state: dict[str, np.ndarray] | None = None,
) -> None:
    tensors = {k: v.contiguous().cpu() for k, v in state.items()}
    # np.array, not np.ascontiguousarray: that one makes a 0-d moment (of a BatchNorm's
    # num_batches_tracked) 1-d, and a resumed FedAdam then broadcasts that buffer to shape [1].
    tensors |= {_STRATEGY_PREFIX + k: torch.from_numpy(np.array(v, order="C")) for k, v in (strategy_state or {}).items()}
    digests = json.dumps(tensor_digests({k: v.numpy() for k, v in tensors.items()}), sort_keys=True)
    with atomic_path(run_dir / CHECKPOINT_FILE) as temp:
        save_file(tensors, str(temp), metadata={"round": str(server_round), DIGESTS_KEY: digests})


def load_checkpoint(run_dir: Path) -> tuple[int, dict[str, torch.Tensor]]:
    """(last completed round, global state dict)."""
    server_round, tensors = _read(run_dir)
    return server_round, {k: v for k, v in tensors.items() if not k.startswith(_STRATEGY_PREFIX)}


def load_strategy_state(run_dir: Path) -> dict[str, np.ndarray]:
    """The strategy state saved with the last checkpoint (empty for FedAvg/FedProx)."""
    _, tensors = _read(run_dir)
    return {k[len(_STRATEGY_PREFIX):]: v.numpy() for k, v in tensors.items() if k.startswith(_STRATEGY_PREFIX)}


def _read(run_dir: Path) -> tuple[int, dict[str, torch.Tensor]]:
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: that run finished no round yet; start it again without resume=")
    try:
        with safe_open(str(path), framework="pt") as reader:
            metadata = reader.metadata() or {}
            server_round = int(metadata["round"])
            state = {key: reader.get_tensor(key) for key in reader.keys()}
    except Exception as error:  # safetensors raises several types for truncated or foreign files
        raise CheckpointError(f"{path} is not a readable fedtosc checkpoint ({error}); start the run again") from error
    problem = digest_problem({key: tensor.numpy() for key, tensor in state.items()}, metadata)
    if problem is not None:
        raise CheckpointError(f"{path}: {problem}; start the run again without resume=")
    return server_round, state
