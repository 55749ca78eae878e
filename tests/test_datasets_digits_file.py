"""The digits are read from scikit-learn's own file without importing scikit-learn, and equal what
scikit-learn's loader returns."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from fedtosc.data.datasets import digits_arrays


def test_the_digits_read_from_the_file_are_scikit_learns() -> None:
    from sklearn.datasets import load_digits

    images, targets = digits_arrays()
    reference = load_digits()
    assert images.dtype == reference.images.dtype and np.array_equal(images, reference.images)
    assert np.array_equal(targets, reference.target)
    assert np.array_equal(np.unique(targets), reference.target_names)


def test_reading_the_digits_imports_no_scikit_learn() -> None:
    code = "import sys; from fedtosc.data.datasets import digits_arrays; digits_arrays(); print('sklearn' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"
