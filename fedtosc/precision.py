"""Float precision on CUDA: whether cuDNN convolutions and matrix products may use TF32.

torch lets cuDNN convolutions run in TF32 (a 10-bit mantissa) by default. That is fine for
training, but not for the teacher pass, whose outputs are stored and keyed by teacher and data
alone: a store built on a GPU must hold what one built on the CPU holds (benchmarks/gpu.py
measured soft labels 0.02 apart in TF32, and 6e-5 apart, fp16 storage rounding, in float32).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["tf32"]


@contextmanager
def tf32(allowed: bool) -> Iterator[None]:
    """Within the block, CUDA convolutions and matrix products use TF32 if `allowed`, else full float32."""
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = allowed
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
