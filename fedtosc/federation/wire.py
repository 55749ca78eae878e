"""The student's arrays in Flower messages, both ways: one bundle, in the dtype `federation.wire_dtype` names.

Every round the global model goes down to each sampled node and each update comes back: the whole
student each way. `to_wire` packs its arrays into one safetensors file carried as a single Flower
Array (`BUNDLE`), and `from_wire` unpacks it. Flower 1.42 moves a message as a tree of objects, one
request per object at every hop (ServerApp, SuperLink, SuperNode, ClientApp, and back): as 36 named
arrays the digits student was 60 objects a message, as one bundle it is 6. Safetensors is a
plain header of names, dtypes and shapes before the raw values, so unpacking runs no code from the
sender, and a damaged or foreign bundle is a `WireFormatError` naming what is wrong.

With `float16` the sender narrows every float32 array before packing and the receiver widens it
back to float32 (`from_wire`) before anything uses it: the ClientApp before it trains, the server
(server/screening.py) before it screens and aggregates. So the model, the weighted average,
FedAdam's moments and the checkpoints stay float32; only the values in transit are rounded to
float16 (11 significant bits, or within 3e-8 below 6.1e-5; a value beyond float16's ±65,504
arrives as inf, which screening rejects). Integer and bool buffers (BatchNorm's
num_batches_tracked) travel as they are. `float32`, the default, carries every value bit for bit.
"""

from __future__ import annotations

import functools
import io
import json
from collections.abc import Mapping

import numpy as np
import torch
from flwr.app import Array, ArrayRecord
from flwr.common.constant import SType
from safetensors import SafetensorError
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from fedtosc.federation.array_bytes import array_values

__all__ = ["BUNDLE", "WireFormatError", "from_wire", "received_state", "state_to_wire", "to_wire", "wire_nbytes"]

BUNDLE = "bundle"  # the one array of a model on the wire
_ORDER = "fedtosc.order"  # the bundle's metadata entry listing its arrays in the sender's order
_MODEL_DTYPE = np.dtype(np.float32)  # what the student holds, and what a receiver restores


class WireFormatError(ValueError):
    """A model record that is not one intact fedtosc bundle."""


def to_wire(arrays: ArrayRecord, wire_dtype: str) -> ArrayRecord:
    """`arrays` as they are sent: one bundle, its float32 arrays in `wire_dtype`, every other array as it is."""
    return _pack({name: array_values(array) for name, array in arrays.items()}, wire_dtype)


def state_to_wire(state: Mapping[str, torch.Tensor], wire_dtype: str) -> ArrayRecord:
    """A torch state dict as `to_wire` sends it, without building a Flower Array per tensor first."""
    return _pack({name: tensor.detach().cpu().numpy() for name, tensor in state.items()}, wire_dtype)


def from_wire(arrays: ArrayRecord, wire_dtype: str) -> ArrayRecord:
    """The named arrays a bundle carries, in the model's dtypes: `wire_dtype` arrays as float32, the rest unchanged."""
    record = ArrayRecord()  # filled item by item: ArrayRecord(dict) would copy each Array into a plain one
    for name, values in _unpack(arrays, wire_dtype).items():
        record[name] = _UnpackedArray(values)
    return record


def received_state(arrays: ArrayRecord, wire_dtype: str) -> dict[str, torch.Tensor]:
    """The state dict a bundle carries, in the model's dtypes: `from_wire(arrays).to_torch_state_dict()`
    without the Flower Array per tensor in between."""
    return {name: torch.from_numpy(values) for name, values in _unpack(arrays, wire_dtype).items()}


def wire_nbytes(arrays: ArrayRecord, wire_dtype: str) -> int:
    """Bytes of the bundle `arrays` travel as: the values at their wire dtype, plus the bundle's
    header of names, dtypes and shapes (Flower's own framing aside)."""
    return len(to_wire(arrays, wire_dtype)[BUNDLE].data)


def _pack(values: Mapping[str, np.ndarray], wire_dtype: str) -> ArrayRecord:
    wire = np.dtype(wire_dtype)
    # astype(copy=False): a float32 wire keeps the float32 arrays as they are, no copy before packing.
    sent = {name: np.asarray(value.astype(wire, copy=False) if value.dtype == _MODEL_DTYPE else value, order="C")
            for name, value in values.items()}
    # Safetensors stores its arrays sorted; the metadata keeps the sender's order for the receiver.
    blob = save_safetensors(sent, metadata={_ORDER: json.dumps(list(sent))})
    return ArrayRecord({BUNDLE: Array(np.frombuffer(blob, dtype=np.uint8))})


def _unpack(arrays: ArrayRecord, wire_dtype: str) -> dict[str, np.ndarray]:
    if list(arrays.keys()) != [BUNDLE]:
        raise WireFormatError(
            f"the model arrived as arrays {sorted(arrays.keys())[:5]}, not as one {BUNDLE!r}: the sender runs "
            "another fedtosc version (run the same version on the server and every node)"
        )
    blob = array_values(arrays[BUNDLE]).tobytes()
    try:
        values = load_safetensors(blob)
        order = json.loads(_header(blob)["__metadata__"][_ORDER])
    except (SafetensorError, ValueError, KeyError, TypeError) as error:
        raise WireFormatError(f"the model bundle is damaged ({error!r}): the message was corrupted in transit") from error
    if sorted(order) != sorted(values):
        raise WireFormatError("the model bundle is damaged: its list of arrays does not match the arrays it holds")
    wire = np.dtype(wire_dtype)
    # Fresh arrays from the bundle's bytes: float32 ones need no second copy.
    return {name: values[name].astype(_MODEL_DTYPE, copy=False) if values[name].dtype == wire else values[name]
            for name in order}


class _UnpackedArray(Array):
    """`Array(values)`, the same fields and bytes, that also keeps `values`: `numpy()` returns a copy
    of them instead of parsing its .npy bytes again (np.load's header parse, 1.3 ms for the digits
    student's 36 arrays), which FedAvg does for every reply it averages. Its .npy header is made
    once per dtype and shape (np.save cost 1.1 ms a reply). The server's unpacked replies are these;
    they are averaged, never sent."""

    def __init__(self, values: np.ndarray) -> None:
        data = _npy_header(values.dtype.str, values.shape) + values.tobytes()
        super().__init__(dtype=str(values.dtype), shape=tuple(values.shape), stype=SType.NUMPY, data=data)
        self.__dict__["_values"] = values  # beside Flower's fields, not one of them

    def numpy(self) -> np.ndarray:
        return self.__dict__["_values"].copy()


@functools.lru_cache(maxsize=4096)
def _npy_header(dtype: str, shape: tuple[int, ...]) -> bytes:
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _header(blob: bytes) -> dict:
    """A safetensors file's JSON header: an 8-byte little-endian length, then the JSON itself."""
    length = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + length])
