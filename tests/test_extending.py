"""docs/architecture.md, "How to extend", stays true: its worked example runs as written, and the
channel it registers trains and evaluates a student end to end (`fedtosc train`)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from fedtosc.cli import main
from fedtosc.config import ConfigError, load_config
from fedtosc.registries import CHANNELS

_DOC = Path(__file__).resolve().parents[1] / "docs" / "architecture.md"


def _how_to_extend_example() -> str:
    section = _DOC.read_text().split("## How to extend", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


@pytest.fixture
def phase_drift():  # noqa: ANN201
    namespace: dict = {}
    exec(compile(_how_to_extend_example(), str(_DOC), "exec"), namespace)  # noqa: S102 - our own doc
    yield namespace["PhaseDriftChannel"]
    CHANNELS.unregister("phase_drift")


def test_an_unregistered_channel_is_refused_listing_the_registered_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown channel 'phase_drift'.*known: \['awgn', 'rayleigh', 'rician'\]"):
        load_config(["channel.clients='phase_drift:10'"])


def test_the_documented_channel_takes_only_the_parameters_it_declared(phase_drift) -> None:  # noqa: ANN001
    profile = load_config(["channel.clients='phase_drift:10:spread=0.25'"]).channel
    assert "spread=0.25" in profile.clients
    with pytest.raises(ConfigError, match=r"unexpected option 'k=5'.*phase_drift also takes \['spread'\]"):
        load_config(["channel.clients='phase_drift:10:k=5'"])


@pytest.mark.slow  # trains and evaluates a student (the teacher is the session's, tests/conftest.py)
def test_the_documented_channel_registers_trains_and_evaluates_end_to_end(
    phase_drift, digits_teacher: list[str], tmp_path: Path  # noqa: ANN001
) -> None:
    run_dir = tmp_path / "run"
    code = main([
        "train", f"output_dir={run_dir}", *digits_teacher,
        "federation.rounds=3", "train.local_epochs=2", "federation.num_clients=2",
        "channel.clients='phase_drift:10:spread=0.5,phase_drift:0~20:csi=none'",
        "channel.eval_channels=[phase_drift,'phase_drift:csi=none']", "channel.eval_snr_db=[20]",
    ])
    assert code == 0
    results = json.loads((run_dir / "results.json").read_text())
    assert set(results["accuracy_vs_snr"]) == {"phase_drift", "phase_drift[csi=none]"}
    assert results["federation"]["client_channel_profiles"] == {
        "0": "phase_drift(spread=0.5)@10dB", "1": "phase_drift[csi=none]@uniform(0,20)dB",
    }
    # With CSI the receiver undoes the rotation; without it, a random phase scrambles the symbols.
    accuracy = results["accuracy_vs_snr"]
    assert accuracy["phase_drift"]["20.0"] > accuracy["phase_drift[csi=none]"]["20.0"]
