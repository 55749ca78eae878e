"""The registries: every family a config chooses from, name -> builder (docs/architecture.md,
"How to extend"). Adding an entry is one class or function, one line here (or `register` at run
time) and one test; the config accepts exactly the names registered, with no second list.

Builders are named by import path, so importing this module (as config validation does) loads
no torch, Sionna or Flower. Each family's builder has one signature, stated beside it.
"""

from __future__ import annotations

from fedtosc.data.catalog import TORCHVISION_DATASETS
from fedtosc.registry import Registry

__all__ = ["CHANNELS", "CODECS", "DATASETS", "PARTITIONERS", "STRATEGIES", "STUDIES", "TEACHERS"]

# A `Channel` subclass; built with the keyword arguments it accepts of (csi, k_factor, block_length).
CHANNELS = Registry("channel", {
    "awgn": "fedtosc.channels.blocks:AWGNChannel",
    "rayleigh": "fedtosc.channels.blocks:RayleighChannel",
    "rician": "fedtosc.channels.blocks:RicianChannel",
})

# (experiment: Experiment, device: torch.device) -> Teacher
TEACHERS = Registry("teacher.name", {
    "server_cnn": "fedtosc.teacher_builders:server_cnn_teacher",
    "clip": "fedtosc.teacher_builders:clip_teacher",
    "resnet": "fedtosc.teacher_builders:resnet_teacher",
})

# A `KnowledgeCodec` subclass: `from_config(KnowledgeConfig)` for a build, `(**params())` to reopen a store.
CODECS = Registry("knowledge.codec", {
    "topk": "fedtosc.knowledge.codecs:TopKCodec",
    "full": "fedtosc.knowledge.codecs:FullCodec",
    "int8_embedding": "fedtosc.knowledge.codecs:Int8EmbeddingCodec",
    "pca_embedding": "fedtosc.knowledge.codecs:PCAEmbeddingCodec",
})

# A screened Flower strategy class: `from_config(config: ExperimentConfig, **common)`.
STRATEGIES = Registry("strategy.name", {
    "fedavg": "server.screening:ScreenedFedAvg",
    "fedprox": "server.screening:ScreenedFedProx",
    "fedadam": "server.screening:ScreenedFedAdam",
})

# (config: DatasetConfig, seed: int) -> DataSplits
DATASETS = Registry("dataset.name", {
    "digits": "fedtosc.data.datasets:load_digits",
    "image_folder": "fedtosc.data.datasets:load_image_folder",
    **{name: "fedtosc.data.datasets:load_torchvision" for name in TORCHVISION_DATASETS},
})

# (federation: FederationConfig, seed: int) -> a flwr-datasets Partitioner
PARTITIONERS = Registry("federation.partitioner", {
    "iid": "fedtosc.data.partition:iid_partitioner",
    "dirichlet": "fedtosc.data.partition:dirichlet_partitioner",
    "pathological": "fedtosc.data.partition:pathological_partitioner",
})

# A `Study`: its conf/study/<conf>.yaml grid, and how its finished cells become rows and a figure.
STUDIES = Registry("study", {
    "data-efficiency": "fedtosc.study_catalog:DATA_EFFICIENCY",
    "snr-sweep": "fedtosc.study_catalog:SNR_SWEEP",
    "snr-mismatch": "fedtosc.study_catalog:SNR_MISMATCH",
    "bandwidth": "fedtosc.study_catalog:BANDWIDTH",
    "knowledge-rate": "fedtosc.study_catalog:KNOWLEDGE_RATE",
    "rate-price": "fedtosc.study_catalog:RATE_PRICE",
})
