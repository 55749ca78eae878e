"""The studies `fedtosc study <name>` runs (`fedtosc.registries.STUDIES`): each is its grid in
conf/study/, its arms (a name -> the overrides of that training config), how its finished cells
become rows (with paired intervals) and claims, and how the rows become a figure.

Plain data, light to import: the CLI lists the studies for `--help` without loading matplotlib;
`rows`, `plot`, `claims` and `follow_up` are import paths, resolved when a study runs or is summarized.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "BANDWIDTH", "DATA_EFFICIENCY", "KNOWLEDGE_RATE", "RATE_PRICE", "SNR_MISMATCH", "SNR_SWEEP", "SPECIALIST_PREFIX", "Study",
]


@dataclass(frozen=True)
class Study:
    conf: str  # conf/study/<conf>.yaml: the grid (hydra.sweeper.params) and fixed keys
    summary: str  # one line for --help
    example: str  # overrides worth showing in --help
    rows: str  # "module:function": (cells, **options) -> list of row dicts
    plot: str  # "module:function": (rows, path) -> None
    # Command-line options passed to `rows`: flag -> argparse keyword arguments
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Arm name -> overrides: the grid runs once per arm (fedtosc.studies.sweep); empty: no arm axis
    arms: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # "module:function": (finished CellOutcomes) -> [(arm, overrides)]: cells derived from the arms' results
    follow_up: str | None = None
    # "module:function": (rows) -> list of {"claim": sentence, ...numbers}: the study's headline
    claims: str | None = None
    printed: tuple[str, ...] = ("series", "accuracy_mean", "accuracy_std", "num_seeds")  # columns `fedtosc study` prints

    def summarize(self, cells: list, **options: Any) -> list[dict[str, Any]]:
        return _resolve(self.rows)(cells, **options)

    def draw(self, rows: list[dict[str, Any]], path: Any) -> None:
        _resolve(self.plot)(rows, path)

    def derive(self, finished: list) -> list[tuple[str, list[str]]]:
        return _resolve(self.follow_up)(finished) if self.follow_up else []

    def headline(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return _resolve(self.claims)(rows) if self.claims else []


def _resolve(path: str) -> Any:
    module, _, attribute = path.partition(":")
    return getattr(importlib.import_module(module), attribute)


_WHERE = {
    "--channel": {"default": "awgn", "help": "eval link label the accuracy is read at (default: awgn)"},
    "--snr-db": {"type": float, "default": 10.0, "help": "eval SNR the accuracy is read at (default: 10)"},
}

DATA_EFFICIENCY = Study(
    conf="data_efficiency",
    summary="accuracy vs label fraction per method and client SNR profile, full − labels_only paired",
    example="dataset.label_fraction=0.05,1.0 method=full,labels_only seed=0,1 federation.rounds=3",
    rows="fedtosc.studies.tables:data_efficiency_rows",
    plot="fedtosc.studies.tables:plot_data_efficiency",
    options=_WHERE,
    claims="fedtosc.studies.tables:data_efficiency_claims",
    printed=("series", "label_fraction", "accuracy_mean", "accuracy_std", "num_seeds", "paired_with", "difference",
             "difference_low", "difference_high"),
)

SNR_SWEEP = Study(
    conf="snr_sweep",
    summary="accuracy vs SNR per method and eval channel type",
    example="method=full,no_adaptive seed=0 'channel.eval_channels=[awgn,rician]'",
    rows="fedtosc.studies.tables:snr_sweep_rows",
    plot="fedtosc.studies.tables:plot_snr_sweep",
    printed=("series", "channel", "snr_db", "accuracy_mean", "accuracy_std", "num_seeds"),
)


SPECIALIST_PREFIX = "specialist_"  # how the snr-mismatch rows tell specialists from the wide-range arms


def _specialist(channel: str, snr_db: int) -> tuple[str, tuple[str, ...]]:
    """A specialist: the full method trained at one SNR on one channel, evaluated on that channel only."""
    return f"{SPECIALIST_PREFIX}{channel}_{snr_db}dB", (
        "method=full", f"channel.clients={channel}:{snr_db}", f"channel.eval_channels=[{channel}]",
    )


SNR_MISMATCH = Study(
    conf="snr_mismatch",
    summary="one student for all links: wide-range full and no_adaptive against fixed-SNR specialists",
    example="arm=full,specialist_awgn_5dB seed=0 federation.rounds=3",
    rows="fedtosc.studies.mismatch:snr_mismatch_rows",
    plot="fedtosc.studies.mismatch:plot_snr_mismatch",
    arms={
        "full": ("method=full",),
        "no_adaptive": ("method=no_adaptive",),
        # full's SNR conditioning at no_adaptive's bandwidth (all student.channel_uses symbols): the
        # pair that isolates the channel-adaptive module, since full's learned rate sends fewer symbols.
        "fixed_rate": ("method=fixed_rate",),
        **dict(_specialist(channel, snr_db) for channel in ("awgn", "rayleigh", "rician") for snr_db in (-5, 5, 15)),
    },
    claims="fedtosc.studies.mismatch:snr_mismatch_claims",
    printed=("arm", "channel", "snr_db", "channel_uses", "accuracy_mean", "num_seeds", "paired_with", "difference",
             "difference_low", "difference_high", "matches"),
)

BANDWIDTH = Study(
    conf="bandwidth",
    summary="accuracy vs mean symbols sent: learned rate against a fixed rate at the same mean, and no_ib",
    example="student.channel_uses=4,16 seed=0 federation.rounds=3",
    rows="fedtosc.studies.bandwidth:bandwidth_rows",
    plot="fedtosc.studies.bandwidth:plot_bandwidth",
    options={
        "--channel": {"default": "rayleigh[csi=none]", "help": "eval link label (default: rayleigh[csi=none])"},
        "--snr-db": {"type": float, "default": 0.0, "help": "eval SNR (default: 0)"},
    },
    # no_ib at one width only: its override pins the width axis.
    arms={"full": ("method=full",), "no_ib": ("method=no_ib", "student.channel_uses=8")},
    follow_up="fedtosc.studies.bandwidth:fixed_rate_cells",
    claims="fedtosc.studies.bandwidth:bandwidth_claims",
    printed=("arm", "max_channel_uses", "mean_channel_uses", "accuracy_mean", "num_seeds", "paired_with", "difference",
             "difference_low", "difference_high"),
)

KNOWLEDGE_RATE = Study(
    conf="knowledge_rate",
    summary="student accuracy vs knowledge bytes per sample broadcast, per codec, paired against full",
    example="arm=full,top1,int8 federation.rounds=3",
    rows="fedtosc.studies.knowledge_rate:knowledge_rate_rows",
    plot="fedtosc.studies.knowledge_rate:plot_knowledge_rate",
    options=_WHERE,
    # PCA widths 8 and 16 are 1/8 and 1/4 of ResNet-20's 64-wide embedding (teacher=resnet_cifar);
    # for another teacher, add arms at its widths.
    arms={
        "full": ("knowledge=full",),
        **{f"top{k}": ("knowledge=topk", f"knowledge.k={k}") for k in (1, 2, 5, 10)},
        "int8": ("knowledge=int8_embedding",),
        **{f"pca{dim}": ("knowledge=pca_embedding", f"knowledge.pca_dim={dim}") for dim in (8, 16)},
    },
    claims="fedtosc.studies.knowledge_rate:knowledge_rate_claims",
    printed=("arm", "bytes_per_sample", "accuracy_mean", "paired_with", "difference", "difference_low",
             "difference_high", "difference_p"),
)

RATE_PRICES = (0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)  # nats per symbol; 0.2 is LossConfig's default, set on digits

RATE_PRICE = Study(
    conf="rate_price",
    summary="accuracy vs symbols sent as the price per symbol (loss.rate_weight) rises, paired against price 0",
    example="arm=price_0,price_0.05 federation.rounds=3",
    rows="fedtosc.studies.rate_price:rate_price_rows",
    plot="fedtosc.studies.rate_price:plot_rate_price",
    options=_WHERE,
    arms={f"price_{price:g}": ("method=full", f"loss.rate_weight={price:g}") for price in RATE_PRICES},
    claims="fedtosc.studies.rate_price:rate_price_claims",
    printed=("arm", "rate_weight", "channel_uses", "accuracy_mean", "paired_with", "difference", "difference_low",
             "difference_high", "difference_p"),
)
