"""The student's arrays in Flower messages, both ways, in the dtype `federation.wire_dtype` names.

Every round the global model goes down to each sampled node and each update comes back: the whole
float32 student each way. With `float16` the sender narrows every float32 array (`to_wire`) and the
receiver widens it back to float32 (`from_wire`) before anything uses it: the ClientApp before it
trains, the server (server/screening.py) before it screens and aggregates. So the model, the
weighted average, FedAdam's moments and the checkpoints stay float32; only the values in transit
are rounded to float16 (11 significant bits, or within 3e-8 below 6.1e-5; a value beyond float16's
±65,504 arrives as inf, which screening rejects). Integer and bool buffers (BatchNorm's
num_batches_tracked) travel as they are. `float32`, the default, hands the record itself on: the
messages of before, bit for bit.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from flwr.app import Array, ArrayRecord

from fedtosc.federation.array_bytes import array_values

__all__ = ["from_wire", "received_state", "to_wire", "wire_nbytes"]

_MODEL_DTYPE = np.dtype(np.float32)  # what the student holds, and what a receiver restores


def to_wire(arrays: ArrayRecord, wire_dtype: str) -> ArrayRecord:
    """`arrays` as they are sent: float32 arrays in `wire_dtype`, every other array unchanged."""
    return _recast(arrays, _MODEL_DTYPE, np.dtype(wire_dtype))


def from_wire(arrays: ArrayRecord, wire_dtype: str) -> ArrayRecord:
    """Arrays as received, back in the model's dtypes: `wire_dtype` arrays as float32, the rest unchanged."""
    return _recast(arrays, np.dtype(wire_dtype), _MODEL_DTYPE)


def received_state(arrays: ArrayRecord, wire_dtype: str) -> dict[str, torch.Tensor]:
    """The state dict `arrays` carry, in the model's dtypes: `from_wire(arrays).to_torch_state_dict()`,
    read without numpy's per-array header parse (fedtosc.federation.array_bytes)."""
    # array_values is a read-only view of the message's bytes: the student gets a copy to train.
    return {name: torch.from_numpy(array_values(array).copy()) for name, array in from_wire(arrays, wire_dtype).items()}


def wire_nbytes(arrays: ArrayRecord, wire_dtype: str) -> int:
    """Bytes of the values `arrays` travel as (Flower's header per array aside), counted from the
    shapes: the float32 arrays at `wire_dtype`'s itemsize, the rest at their own, as `to_wire` sends
    them, without the float16 copy of the model that converting to count would build."""
    wire = np.dtype(wire_dtype)
    return sum(
        math.prod(array.shape) * (wire if np.dtype(array.dtype) == _MODEL_DTYPE else np.dtype(array.dtype)).itemsize
        for array in arrays.values()
    )


def _recast(arrays: ArrayRecord, source: np.dtype, target: np.dtype) -> ArrayRecord:
    if source == target:  # float32 on the wire: the record itself goes on, untouched
        return arrays
    return ArrayRecord(
        {name: Array(array_values(array).astype(target)) if np.dtype(array.dtype) == source else array
         for name, array in arrays.items()}
    )
