"""Reading a Flower Array's values from its bytes gives what `Array.numpy()` gives, or defers to it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from flwr.app import Array, ArrayRecord

from fedtosc.federation.array_bytes import array_values
from fedtosc.federation.wire import from_wire, received_state, to_wire

_ARRAYS = [
    np.arange(5, dtype=np.float32),
    np.linspace(-1, 1, 12, dtype=np.float16).reshape(3, 4),
    np.array(7, dtype=np.int64),  # a BatchNorm step counter: 0-d
    np.random.default_rng(0).standard_normal((2, 3, 4, 5)).astype(np.float32),
    np.asfortranarray(np.arange(12, dtype=np.float32).reshape(3, 4)),  # np.save writes it column-major
    np.ones((0, 3), dtype=np.float32),
    np.array([True, False]),
    np.arange(12, dtype=">i4").reshape(3, 4),  # big-endian
    np.array([np.nan, np.inf, -0.0], dtype=np.float64),
]


@pytest.mark.parametrize("values", _ARRAYS, ids=lambda values: f"{values.dtype.str}{list(values.shape)}")
def test_the_values_read_from_the_bytes_are_what_numpy_loads(values: np.ndarray) -> None:
    array = Array(values)
    read = array_values(array)
    loaded = array.numpy()
    assert read.dtype == loaded.dtype and read.shape == loaded.shape
    assert np.array_equal(read, loaded, equal_nan=True)
    assert not read.flags.writeable  # a view of the message's bytes, never a place to write


def test_anything_else_goes_to_array_numpy() -> None:
    values = np.arange(6, dtype=np.float32)
    truncated = Array(dtype="float32", shape=(6,), stype="numpy.ndarray", data=Array(values).data[:-4])
    with pytest.raises(ValueError):  # numpy's own error, as before
        array_values(truncated)
    other = Array(dtype="float32", shape=(6,), stype="torch.Tensor", data=values.tobytes())
    with pytest.raises(TypeError, match="Unsupported serialization type"):
        array_values(other)


@pytest.mark.parametrize("wire_dtype", ["float32", "float16"])
def test_the_received_state_is_what_flowers_own_conversion_gives(wire_dtype: str) -> None:
    state = {"conv.weight": torch.randn(4, 3, 3, 3), "bn.num_batches_tracked": torch.tensor(5), "fc.bias": torch.randn(10)}
    sent = to_wire(ArrayRecord(state), wire_dtype)

    received = received_state(sent, wire_dtype)
    expected = from_wire(sent, wire_dtype).to_torch_state_dict()

    assert received.keys() == expected.keys()
    assert all(received[name].dtype == expected[name].dtype and torch.equal(received[name], expected[name]) for name in expected)
    assert received["conv.weight"].dtype == torch.float32
    received["fc.bias"] += 1  # writable: the ClientApp loads it into its student
