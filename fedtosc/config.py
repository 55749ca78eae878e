"""The typed experiment config: Hydra composes `conf/`, this schema validates it.

Every key a user can set is declared here with its type, so an unknown key or a
value of the wrong type stops the run before any work (Hydra names the key), and
`check_ranges` names any value that is the right type but out of range.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.config_store import ConfigStore
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

__all__ = [
    "ChannelConfig",
    "ConfigError",
    "DatasetConfig",
    "ExperimentConfig",
    "FederationConfig",
    "KnowledgeConfig",
    "LossConfig",
    "RayConfig",
    "StrategyConfig",
    "StudentConfig",
    "TeacherConfig",
    "TrainConfig",
    "check_ranges",
    "config_from_json",
    "config_value",
    "config_to_json",
    "load_config",
    "register_schema",
]


class ConfigError(ValueError):
    """A config key is unknown, mistyped or out of range; the message names it."""


@dataclass
class DatasetConfig:
    name: str = "digits"  # a name in fedtosc.registries.DATASETS
    root: str | None = None  # folder for image_folder / torchvision datasets
    download: bool = False  # torchvision datasets only: fetch from the internet when missing
    test_fraction: float = 0.25  # held-out share, for datasets without a test split
    server_fraction: float = 0.3  # share of the training split the server holds, labelled, to train its teacher
    # > 0: transfer-set mode. This share of the training split becomes a public, unlabelled transfer set
    # that every client holds; the teacher's knowledge covers only it, never the clients' private data.
    transfer_fraction: float = 0.0
    label_fraction: float = 1.0  # share of client samples whose labels are used (CE term)
    # A folder of node0/, node1/, ... (`fedtosc data split` writes one): simulated node i reads its own
    # data from node<i>/ through the same loader a SuperNode's `data-path` uses. null: partitions of this dataset.
    node_root: str | None = None
    max_train_samples: int | None = None  # cap, for quick runs on big datasets
    max_test_samples: int | None = None
    cache_dir: str | None = "~/.cache/fedtosc/datasets"  # decoded image-folder arrays and client partitions; null: neither cached

    def __post_init__(self) -> None:
        # Resolved where the config is built: simulated nodes run from Flower's app copy, not this directory.
        if self.node_root:
            self.node_root = str(Path(self.node_root).expanduser().resolve())


@dataclass
class TeacherConfig:
    name: str = "server_cnn"  # a name in fedtosc.registries.TEACHERS
    # server_cnn: a larger CNN trained on the server's labelled data, cached by fingerprint
    # resnet: ResNet-20 of base width `width`, loaded from `checkpoint` (`fedtosc teacher train` writes it)
    width: int = 64
    epochs: int = 30
    lr: float = 2e-3  # peak rate: AdamW for server_cnn, SGD for resnet
    # clip: any open_clip model name; weights from a pretrained tag or a local checkpoint
    model: str = "ViT-B-32"
    pretrained: str | None = None
    # clip: open_clip weights; resnet: the teacher checkpoint. A relative path is relative to the checkout.
    checkpoint: str | None = None
    allow_random_weights: bool = False  # benchmarks only: cost does not depend on weights
    head: str = "zero_shot"  # zero_shot | linear_probe
    # zero_shot: each template holds one {} for the class name; null: the dataset's ensemble (fedtosc/data/prompts.py)
    prompt_templates: list[str] | None = None
    class_names: list[str] | None = None  # defaults to the dataset's class names
    batch_size: int = 128
    cache_dir: str = "~/.cache/fedtosc/teachers"

    def __post_init__(self) -> None:
        # Resolved when the config is built, in the launcher: Flower's ServerApp runs from an app copy
        # without teachers/, so the run config it reads must already name the file absolutely.
        if self.checkpoint:
            self.checkpoint = str(default_config_dir().parent / Path(self.checkpoint).expanduser())


@dataclass
class StudentConfig:
    width: int = 32  # channels of the first conv block
    feature_dim: int = 128
    channel_uses: int = 16  # complex symbols per sample at full rate
    # SNR conditioning everywhere: the transmitter's gate and controller, the receiver's channel state
    adaptive: bool = True
    rate_adaptive: bool = True  # a learned, SNR-conditioned controller decides how many symbols to send
    min_channel_uses: int = 2  # the controller's floor


@dataclass
class ChannelConfig:
    """Client links, and the links and SNRs the final sweep evaluates.

    One source of truth for CSI and Rician K: an entry's own `:csi=` / `:k=` decide its link, in
    `clients` and in `eval_channels` alike; `csi` and `k_factor` are the defaults for entries that
    do not say (fedtosc.channels.client_profiles / eval_links apply them).

    One source of truth for SNRs: every SNR here (client entries, `eval_snr_db`) must lie within
    `fedtosc.channels.limits.SNR_DB_LIMITS`, [-30, 50] dB, the range the channels enforce. It is
    not a config key: a narrower key could only repeat that check, and a wider one would pass
    values the channels then refuse after training.
    """

    # One entry per client (or one entry for all): `awgn:10`, `rayleigh:0~20`, `awgn:gm(10,3,0.9)`, `rician:10:k=5:csi=none`
    clients: str = "awgn:0,awgn:5,awgn:10,awgn:20"
    csi: str = "perfect"  # perfect | none: default for entries without `:csi=`
    k_factor: float = 3.0  # Rician K (linear): default for rician entries without `:k=`
    block_length: int | None = None
    # Entries as in `clients` minus the SNR (`awgn`, `rayleigh:csi=none`, `rician:k=5`), each swept
    # over eval_snr_db; null: the clients' distinct links, each with the K and CSI it trained with.
    eval_channels: list[str] | None = None
    eval_snr_db: list[float] = field(default_factory=lambda: [-5.0, 0.0, 5.0, 10.0, 15.0, 20.0])


@dataclass
class KnowledgeConfig:
    mode: str = "prestored"  # prestored | online | none (labels only)
    codec: str = "topk"  # a name in fedtosc.registries.CODECS
    k: int = 5
    temperature: float = 4.0
    pca_dim: int = 32
    # FKD-style consistency: the teacher labels this many augmented views (crop + flip) per image,
    # each stored with its parameters for clients to replay; 1 = the image as stored.
    views: int = 1
    view_seed: int = 0  # draws the views once per store, independent of the experiment's seed
    cache_dir: str = "~/.cache/fedtosc/knowledge"
    # How a node gets knowledge for its samples (docs/deployment.md):
    # partition: the store's rows for its partition of the server's dataset (every node holds that dataset);
    # transfer_set: the server's transfer set itself (samples as uint8 + their knowledge), once per node,
    #   cached there by fingerprint; nodes distil on it and train CE on their own, private samples;
    # digest: the knowledge keyed by sha256 of each sample's bytes, for nodes holding a public dataset.
    delivery: str = "partition"


@dataclass
class LossConfig:
    kd_weight: float = 1.0
    ce_weight: float = 1.0
    beta: float = 1e-3  # weight of KL(q(z|x) || N(0, I)); 0 disables the IB term
    beta_warmup_rounds: int = 0  # linear annealing of beta over the first rounds
    feature_weight: float = 1.0  # cosine pull of the projected features toward the teacher embedding (embedding codecs)
    rate_weight: float = 0.2  # penalty per complex symbol sent (trains the rate controller); separate from beta


@dataclass
class TrainConfig:
    local_epochs: int = 3
    batch_size: int = 32
    lr: float = 3e-3
    weight_decay: float = 1e-4
    eval_batch_size: int = 512


@dataclass
class FederationConfig:
    num_clients: int = 4
    rounds: int = 10
    fraction_train: float = 1.0
    # Usable updates a round needs: min_train_clients when set, else this share of the sampled clients,
    # rounded up (0.5: 2 of 3, 2 of 4, 1 of 2), so a lost node costs a round's share, not the run.
    min_train_clients: int | None = None
    min_train_fraction: float = 0.5
    # Ray CPUs per simulated client: 1 lets two clients train at once on 2 cores; fractions pack more
    # clients per CPU (docs/scale-out.md: on an existing cluster Flower 1.42 passes whole CPUs only).
    client_cpus: float = 1.0
    # Ray GPUs per simulated client (a fraction shares a GPU); null: a share of the GPUs when the
    # cluster (or this machine) has any and `device` allows them, else 0 (docs/scale-out.md).
    client_gpus: float | None = None
    partitioner: str = "iid"  # a name in fedtosc.registries.PARTITIONERS
    dirichlet_alpha: float = 0.5
    classes_per_client: int = 2
    round_timeout_s: float = 600.0
    connect_timeout_s: float = 120.0  # how long the server waits for num_clients nodes before failing
    # Fault injection for resilience tests: "crash:<partition>@<round>" raises in that client's
    # training, "nan:<partition>@<round>" makes it return NaN weights. Comma-separated; "" = none.
    inject_faults: str = ""
    # The dtype the student's float arrays travel in, down in train messages and up in replies
    # (fedtosc/federation/wire.py): float32 as they are; float16 halves the bytes, and the receiver
    # widens them back to float32 before training or aggregating (integer buffers travel exactly).
    wire_dtype: str = "float32"


@dataclass
class StrategyConfig:
    name: str = "fedavg"  # a name in fedtosc.registries.STRATEGIES
    proximal_mu: float = 0.01
    server_lr: float = 0.01
    snr_aware: bool = False  # weight clients by examples x (1 + snr_weight_alpha * tanh(snr_db / 10))
    snr_weight_alpha: float = 0.5


@dataclass
class RayConfig:
    # null: the simulation starts (and afterwards stops) a Ray instance of its own, unless the
    # RAY_ADDRESS environment variable names a cluster; `auto` or `<host>:<port>` (the GCS address):
    # join that existing cluster, which the run leaves running (docs/scale-out.md).
    address: str | None = None
    # CPUs the run's own Ray starts with (null: every core of this machine). The clients that train
    # at once are num_cpus / federation.client_cpus: 1 trains one at a time in one Ray actor. A joined
    # cluster's CPUs are set when its nodes start (`ray start --num-cpus`), so there it is refused.
    num_cpus: int | None = None


@dataclass
class ExperimentConfig:
    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    channel: ChannelConfig = field(default_factory=ChannelConfig)
    knowledge: KnowledgeConfig = field(default_factory=KnowledgeConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    federation: FederationConfig = field(default_factory=FederationConfig)
    strategy: StrategyConfig = field(default_factory=StrategyConfig)
    ray: RayConfig = field(default_factory=RayConfig)
    method: str = "full"  # set by the conf/method group: a file name there
    seed: int = 0
    output_dir: str | None = None  # default: runs/<timestamp>
    resume: str | None = None  # a run directory: continue its federation from the last checkpointed round
    device: str = "auto"  # auto | cpu | cuda


# Values that are modes of one piece of code, not families one adds to (those are registries).
_ENUMS: dict[str, tuple[str, ...]] = {
    "teacher.head": ("zero_shot", "linear_probe"),
    "knowledge.mode": ("prestored", "online", "none"),
    "knowledge.delivery": ("partition", "transfer_set", "digest"),
    "federation.wire_dtype": ("float32", "float16"),
    "device": ("auto", "cpu", "cuda"),
}

_POSITIVE: tuple[str, ...] = (
    "teacher.width", "teacher.batch_size", "student.width", "student.feature_dim",
    "student.channel_uses", "student.min_channel_uses", "knowledge.k", "knowledge.temperature",
    "knowledge.pca_dim", "knowledge.views", "train.local_epochs", "train.batch_size", "train.lr",
    "train.eval_batch_size", "federation.num_clients", "federation.rounds",
    "federation.client_cpus", "federation.dirichlet_alpha", "federation.classes_per_client",
    "federation.round_timeout_s", "federation.connect_timeout_s",
)
_NON_NEGATIVE: tuple[str, ...] = (
    "teacher.epochs", "loss.kd_weight", "loss.ce_weight", "loss.beta", "loss.beta_warmup_rounds",
    "loss.feature_weight", "loss.rate_weight", "train.weight_decay", "strategy.proximal_mu", "strategy.server_lr", "strategy.snr_weight_alpha", "seed",
    "knowledge.view_seed",
)
_FRACTIONS: tuple[str, ...] = (
    "dataset.test_fraction", "dataset.label_fraction", "federation.fraction_train",
    "federation.min_train_fraction",
)


def config_value(config: ExperimentConfig, dotted: str) -> Any:
    """The value of a dotted key, e.g. `config_value(config, "dataset.root")`."""
    value: Any = config
    for part in dotted.split("."):
        value = getattr(value, part)
    return value


def check_ranges(config: ExperimentConfig) -> None:
    """Raise ConfigError naming the first key whose value is out of range."""
    # Imported here: the registries and limits import this module's dataclasses.
    from fedtosc.channels.limits import CSI_MODES
    from fedtosc.registries import CODECS, DATASETS, PARTITIONERS, STRATEGIES, TEACHERS
    from fedtosc.registry import UnknownEntryError

    for registry in (DATASETS, TEACHERS, CODECS, PARTITIONERS, STRATEGIES):
        try:
            registry.check(config_value(config, registry.key))
        except UnknownEntryError as error:
            raise ConfigError(str(error)) from None
    for key, choices in (_ENUMS | {"channel.csi": CSI_MODES, "method": _methods()}).items():
        if config_value(config, key) not in choices:
            raise ConfigError(f"{key}={config_value(config, key)!r} is not one of {list(choices)}")
    for key in _POSITIVE:
        if not config_value(config, key) > 0:
            raise ConfigError(f"{key}={config_value(config, key)} must be > 0")
    for key in _NON_NEGATIVE:
        if not config_value(config, key) >= 0:
            raise ConfigError(f"{key}={config_value(config, key)} must be >= 0")
    for key in _FRACTIONS:
        if not 0 < config_value(config, key) <= 1:
            raise ConfigError(f"{key}={config_value(config, key)} must be in (0, 1]")
    # 0 is allowed: a shipped or zero-shot teacher learns nothing from a server share, and without one
    # the distillation set (all client data) no longer depends on the seed, so one store serves all seeds.
    if not 0 <= config.dataset.server_fraction < 1:
        raise ConfigError(f"dataset.server_fraction={config.dataset.server_fraction} must be in [0, 1)")
    if not 0 <= config.dataset.transfer_fraction < 1 - config.dataset.server_fraction:
        raise ConfigError("dataset.transfer_fraction must be in [0, 1 - dataset.server_fraction)")
    if config.knowledge.mode == "online" and config.knowledge.delivery != "partition":
        raise ConfigError(
            "knowledge.mode=online runs the teacher on each node's samples, which nodes with their own data "
            "cannot send: use knowledge.mode=prestored with knowledge.delivery="
            f"{config.knowledge.delivery}, or knowledge.delivery=partition"
        )
    if config.dataset.node_root is not None and config.knowledge.mode == "prestored" and config.knowledge.delivery == "partition":
        raise ConfigError(
            "dataset.node_root gives nodes their own data, which the server cannot index: "
            "set knowledge.delivery=transfer_set (or digest)"
        )
    if config.student.min_channel_uses > config.student.channel_uses:
        raise ConfigError("student.min_channel_uses must be <= student.channel_uses")
    if config.student.rate_adaptive and not config.student.adaptive:
        raise ConfigError("student.rate_adaptive=true needs student.adaptive=true: the rate controller conditions on the SNR")
    # The channels' own checks, in pure Python: a value that passes here passes there too.
    from fedtosc.channels import client_profiles, eval_links
    from fedtosc.channels.limits import check_k_factor, check_snr_db

    for snr_db in config.channel.eval_snr_db:
        try:
            check_snr_db(snr_db)
        except ValueError as error:
            raise ConfigError(f"channel.eval_snr_db: {error}") from error
    try:
        check_k_factor(config.channel.k_factor)
    except ValueError as error:
        raise ConfigError(f"channel.k_factor: {error}") from error
    if config.federation.min_train_clients is not None and not (
        1 <= config.federation.min_train_clients <= config.federation.num_clients
    ):
        raise ConfigError("federation.min_train_clients must be in [1, federation.num_clients]")
    from fedtosc.faults import parse_faults

    try:
        parse_faults(config.federation.inject_faults)
    except ValueError as error:
        raise ConfigError(f"federation.inject_faults: {error}") from error
    _check_ray(config)
    # Parsing the client channel line checks its entry count against num_clients and every SNR.
    try:
        client_profiles(config.channel, config.federation.num_clients)
    except ValueError as error:
        raise ConfigError(f"channel.clients: {error}") from error
    try:
        eval_links(config.channel, config.federation.num_clients)
    except ValueError as error:
        raise ConfigError(f"channel.eval_channels: {error}") from error


def _check_ray(config: ExperimentConfig) -> None:
    """Ray's own rules for resource amounts and cluster addresses, checked before any work."""
    from fedtosc.ray_cluster import RayAddressError, check_address, check_own_cpus

    gpus = config.federation.client_gpus
    # Ray takes a fraction of one GPU or whole GPUs; 1.5 GPUs per actor is refused at scheduling time.
    if gpus is not None and not (gpus >= 0 and (gpus <= 1 or float(gpus).is_integer())):
        raise ConfigError(f"federation.client_gpus={gpus} must be a fraction in [0, 1] or a whole number of GPUs")
    if config.ray.address is not None:
        try:
            check_address(config.ray.address)
        except RayAddressError as error:
            raise ConfigError(f"ray.address: {error}") from error
    num_cpus = config.ray.num_cpus
    if num_cpus is not None:
        if num_cpus < 1:
            raise ConfigError(f"ray.num_cpus={num_cpus} must be at least 1 (null: every core of this machine)")
        try:
            check_own_cpus(num_cpus, config.ray.address, "ray.address")
        except RayAddressError as error:
            raise ConfigError(str(error)) from error
        if config.federation.client_cpus > num_cpus:
            raise ConfigError(
                f"federation.client_cpus={config.federation.client_cpus} is more than ray.num_cpus={num_cpus}: "
                "no client could ever be placed; lower client_cpus or raise num_cpus"
            )


def _methods() -> tuple[str, ...]:
    """The baselines: one conf/method/<name>.yaml each, the only list of them."""
    return tuple(sorted(path.stem for path in (default_config_dir() / "method").glob("*.yaml")))


_SCHEMA_NAME = "fedtosc_schema"


def register_schema() -> None:
    """Make `fedtosc_schema` (the first default of conf/config.yaml) known to Hydra's ConfigStore."""
    ConfigStore.instance().store(name=_SCHEMA_NAME, node=ExperimentConfig)


def default_config_dir() -> Path:
    """`conf/` at the project root, beside the `fedtosc` package."""
    return Path(__file__).resolve().parents[1] / "conf"


def load_config(overrides: list[str] | None = None, config_dir: Path | None = None) -> ExperimentConfig:
    """Compose `conf/config.yaml` with Hydra overrides, validate it, return typed config.

    Raises ConfigError naming the key for unknown keys, wrong types and bad ranges.
    """
    config_dir = (config_dir or default_config_dir()).resolve()
    if not (config_dir / "config.yaml").is_file():
        raise ConfigError(f"no config.yaml in {config_dir}: run from a fedtosc checkout")
    register_schema()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
            composed = compose(config_name="config", overrides=list(overrides or []))
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(_explain(error)) from error
    # `+key=value` overrides lift Hydra's struct flag; re-merging into the schema rejects them too.
    return config_from_json(OmegaConf.to_container(composed, resolve=True))


def _explain(error: Exception) -> str:
    """Hydra wraps the OmegaConf error that names the key; surface that one."""
    cause: BaseException | None = error
    while cause is not None and not isinstance(cause, OmegaConfBaseException):
        cause = cause.__cause__
    text = str(cause or error)
    return f"invalid config: {text.strip()}\n(see conf/ and fedtosc/config.py for the accepted keys)"


def config_to_json(config: ExperimentConfig) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_from_json(data: dict[str, Any]) -> ExperimentConfig:
    """Rebuild a validated config from `config_to_json` output (e.g. sent over Flower)."""
    register_schema()
    try:
        merged = OmegaConf.merge(OmegaConf.structured(ExperimentConfig), data)
        config = OmegaConf.to_object(merged)
    except OmegaConfBaseException as error:
        raise ConfigError(_explain(error)) from error
    assert isinstance(config, ExperimentConfig)
    check_ranges(config)
    return config
