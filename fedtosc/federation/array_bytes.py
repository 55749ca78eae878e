"""Read the values of a Flower `Array` straight from its bytes.

A Flower `Array` of stype "numpy.ndarray" carries an .npy file, and `Array.numpy()` reads it with
`np.load`, whose header parse (`ast.literal_eval`) dominates for small arrays: the student's arrays
are read on every train message (the ClientApp) and every reply (the server's screening): 1.3 ms
for the digits student's 38 arrays, against 0.15 ms for a view of the bytes. The .npy header is a documented format (NEP 1:
magic, version, header length, then a dict with `descr`, `fortran_order` and `shape`); this reads
those three fields with a regular expression and views the data, and hands anything it does not
recognize to `Array.numpy()`.
"""

from __future__ import annotations

import math
import re

import numpy as np
from flwr.app import Array

__all__ = ["array_values"]

_MAGIC = b"\x93NUMPY"
# The header dict as numpy writes it: {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }
_HEADER = re.compile(rb"^\{'descr': '([^']+)', 'fortran_order': (False|True), 'shape': \(([0-9, ]*)\), \}\s*$")
_LENGTH_BYTES = {1: 2, 2: 4, 3: 4}  # header-length field size by format major version


def array_values(array: Array) -> np.ndarray:
    """`array`'s values, as `array.numpy()` returns them, read-only (a view of the message's bytes)."""
    data = array.data
    fast = array.stype == "numpy.ndarray" and data[:6] == _MAGIC and data[6] in _LENGTH_BYTES
    if fast:
        size = _LENGTH_BYTES[data[6]]
        start = 8 + size + int.from_bytes(data[8:8 + size], "little")
        header = _HEADER.match(data[8 + size:start])
        if header is not None:
            descr, fortran, dims = header.groups()
            shape = tuple(int(dim) for dim in dims.split(b",") if dim.strip())
            dtype = np.dtype(descr.decode())
            if not dtype.hasobject and len(data) == start + math.prod(shape) * dtype.itemsize:
                values = np.frombuffer(data, dtype=dtype, offset=start)
                return values.reshape(shape, order="F" if fortran == b"True" else "C")
    return array.numpy()

