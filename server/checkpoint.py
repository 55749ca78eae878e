"""Server-side checkpoints: the global student after every round, for `fedtosc run resume=<run dir>`.

One safetensors file (no pickle), replaced atomically, with the round number in its metadata.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from fedtosc.atomic_write import atomic_path

__all__ = ["CHECKPOINT_FILE", "CheckpointError", "load_checkpoint", "save_checkpoint"]

CHECKPOINT_FILE = "checkpoint.safetensors"


class CheckpointError(ValueError):
    """A checkpoint is missing or unreadable; the message names the file and the way out."""


def save_checkpoint(run_dir: Path, server_round: int, state: dict[str, torch.Tensor]) -> None:
    with atomic_path(run_dir / CHECKPOINT_FILE) as temp:
        save_file({k: v.contiguous().cpu() for k, v in state.items()}, str(temp), metadata={"round": str(server_round)})


def load_checkpoint(run_dir: Path) -> tuple[int, dict[str, torch.Tensor]]:
    """(last completed round, global state dict)."""
    path = run_dir / CHECKPOINT_FILE
    if not path.is_file():
        raise CheckpointError(f"{path} does not exist: that run finished no round yet; start it again without resume=")
    try:
        with safe_open(str(path), framework="pt") as reader:
            server_round = int((reader.metadata() or {})["round"])
            state = {key: reader.get_tensor(key) for key in reader.keys()}
    except Exception as error:  # safetensors raises several types for truncated or foreign files
        raise CheckpointError(f"{path} is not a readable fedtosc checkpoint ({error}); start the run again") from error
    return server_round, state
