"""A ResNet-20 teacher trained once on a whole training split and shipped as a verified checkpoint.

`ResNetTeacher` is the CIFAR ResNet of He et al. (2016): a 3x3 stem, three stages of three
basic blocks of width w, 2w, 4w (w=16: 0.27 M parameters), global average pooling and a linear
head. It normalizes its inputs itself, with the training split's per-channel mean and std kept
as buffers, so it takes images in [0, 1] like every `Teacher`.

`train_resnet_teacher` fits it with SGD (Nesterov momentum 0.9, weight decay 5e-4, one-cycle
schedule) on random 4-pixel-padded crops and horizontal flips; the same seed gives the same
weights. The checkpoint is a safetensors file (never a pickle) whose metadata says what it is:
architecture, width, training recipe, dataset fingerprint, test accuracy, training seconds and
the sha256 `fingerprint` of its tensors. `load_resnet_teacher` recomputes that fingerprint and
refuses a file whose tensors do not match it; the teacher_id derives from it, so knowledge
stores are keyed by the weights themselves, never by an experiment's seed.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from fedtosc.atomic_write import atomic_path
from fedtosc.config import TeacherConfig
from fedtosc.data.datasets import DataSplits, ImageDataset
from fedtosc.models.outputs import TeacherOutputs
from fedtosc.models.teachers import Teacher, TeacherError, _cpu_copy, predict

__all__ = [
    "ARCHITECTURE",
    "CheckpointInfo",
    "ResNetTeacher",
    "crop_flip",
    "load_resnet_teacher",
    "read_checkpoint",
    "tensor_fingerprint",
    "train_checkpoint",
    "train_resnet_teacher",
]

ARCHITECTURE = "resnet20"
FORMAT_NAME = "fedtosc-teacher"
FORMAT_VERSION = 1
_BLOCKS_PER_STAGE = 3  # 3 stages x 3 blocks x 2 convs + stem + head = 20 layers
_MOMENTUM = 0.9
_WEIGHT_DECAY = 5e-4
_CROP_PADDING = 4
_RETRAIN = "retrain it with `fedtosc teacher train teacher=resnet_cifar ...`, or restore the shipped file (`git checkout teachers/`)"


@dataclass(frozen=True)
class CheckpointInfo:
    """What a teacher checkpoint's metadata records: enough to rebuild, verify and cite it."""

    architecture: str
    width: int
    in_channels: int
    image_size: list[int]  # [H, W] of the training images
    class_names: list[str]
    epochs: int
    batch_size: int
    lr: float
    seed: int
    dataset: str
    dataset_fingerprint: str
    train_samples: int
    test_samples: int
    test_accuracy: float
    train_seconds: float
    fingerprint: str  # sha256 of the tensors (`tensor_fingerprint`)

    def to_metadata(self) -> dict[str, str]:
        # safetensors metadata holds strings only; JSON keeps numbers and lists typed on the way back.
        return {"format": FORMAT_NAME, "format_version": str(FORMAT_VERSION)} | {
            key: json.dumps(value) for key, value in asdict(self).items()
        }

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], source: Path) -> "CheckpointInfo":
        if metadata.get("format") != FORMAT_NAME:
            raise TeacherError(f"{source} is not a fedtosc teacher checkpoint (no format={FORMAT_NAME!r} metadata); {_RETRAIN}")
        if metadata.get("format_version") != str(FORMAT_VERSION):
            raise TeacherError(
                f"{source} has teacher checkpoint format_version={metadata.get('format_version')!r}; "
                f"this fedtosc reads version {FORMAT_VERSION}: {_RETRAIN}"
            )
        missing = [f.name for f in fields(cls) if f.name not in metadata]
        if missing:
            raise TeacherError(f"{source}: teacher checkpoint metadata lacks {', '.join(missing)}; {_RETRAIN}")
        try:
            return cls(**{f.name: json.loads(metadata[f.name]) for f in fields(cls)})
        except json.JSONDecodeError as error:
            raise TeacherError(f"{source}: unreadable teacher checkpoint metadata ({error}); {_RETRAIN}") from error


class _BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; a 1x1 projection where the shape changes."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x), inplace=True)


class ResNetTeacher(Teacher):
    """ResNet-20 for small images: stages of width w, 2w, 4w; embeddings are the pooled 4w features."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 16) -> None:
        super().__init__()
        self.width = width
        self.register_buffer("mean", torch.full((1, in_channels, 1, 1), 0.5))
        self.register_buffer("std", torch.full((1, in_channels, 1, 1), 0.5))
        layers: list[nn.Module] = [
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=True),
        ]
        channels = width
        for stage in range(3):
            out_channels = width * 2**stage
            for block in range(_BLOCKS_PER_STAGE):
                stride = 2 if stage > 0 and block == 0 else 1
                layers.append(_BasicBlock(channels, out_channels, stride))
                channels = out_channels
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(channels, num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        self.display_name = f"{ARCHITECTURE}(width={width})"
        self.teacher_id = ""

    def set_normalization(self, data: ImageDataset) -> None:
        """Per-channel mean and std of `data` (in [0, 1] units): the inputs the convs see are standardized."""
        pixels = data.images.float().div(255.0).transpose(0, 1).reshape(data.image_shape[0], -1)
        self.mean.copy_(pixels.mean(dim=1).view_as(self.mean))
        self.std.copy_(pixels.std(dim=1).clamp(min=1e-3).view_as(self.std))  # a constant channel must not divide by 0

    def forward(self, images: torch.Tensor) -> TeacherOutputs:
        embeddings = self.features((images - self.mean) / self.std)
        return TeacherOutputs(logits=self.classify(embeddings), embeddings=embeddings)

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.classifier(embeddings)

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _cpu_copy(self.classifier.weight), _cpu_copy(self.classifier.bias)


def crop_flip(images: torch.Tensor, generator: torch.Generator, padding: int = _CROP_PADDING) -> torch.Tensor:
    """Random `padding`-pixel-shifted crops of zero-padded images, each mirrored with probability 1/2.

    `images` [B, C, H, W] (any dtype, any device); offsets and flips are drawn on the CPU from
    `generator`, so a seed gives the same batches on every device.
    """
    batch, _, height, width = images.shape
    top, left = torch.randint(0, 2 * padding + 1, (2, batch, 1), generator=generator).to(images.device)
    flip = (torch.rand(batch, generator=generator) < 0.5).to(images.device)
    rows = top + torch.arange(height, device=images.device)  # [B, H] in padded coordinates
    cols = left + torch.arange(width, device=images.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # mirroring is reading the columns right to left
    padded = F.pad(images, (padding,) * 4)
    crops = padded[torch.arange(batch, device=images.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return crops.permute(0, 3, 1, 2).contiguous()  # advanced indexing put the channels last


def train_resnet_teacher(
    config: TeacherConfig, train: ImageDataset, seed: int, device: torch.device
) -> ResNetTeacher:
    """Fit a fresh ResNet teacher on `train`; initialization, batch order and augmentation follow `seed`."""
    with torch.random.fork_rng(devices=[]):  # the weight init draws from the global RNG; leave the caller's alone
        torch.manual_seed(seed)
        teacher = ResNetTeacher(train.image_shape[0], len(train.class_names), config.width)
    teacher.set_normalization(train)
    teacher.to(device).train()
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(
        teacher.parameters(), lr=config.lr, momentum=_MOMENTUM, nesterov=True, weight_decay=_WEIGHT_DECAY
    )
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    # One-cycle: warm up to teacher.lr, then cosine-anneal to ~0; momentum stays at 0.9 throughout.
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=max(1, config.epochs * steps_per_epoch), cycle_momentum=False
    )
    images = train.images.to(device)  # uint8: a whole CIFAR-10 training split is 150 MB
    labels = train.labels.to(device)
    for epoch in range(config.epochs):
        order = torch.randperm(len(train), generator=generator).to(device)
        bar = tqdm(total=len(train), desc=f"teacher epoch {epoch + 1}/{config.epochs}", unit="img")
        loss_sum, correct = 0.0, 0
        for start in range(0, len(train), config.batch_size):
            batch = order[start : start + config.batch_size]
            inputs = crop_flip(images[batch], generator).float().div(255.0)
            logits = teacher(inputs).logits
            loss = F.cross_entropy(logits, labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            loss_sum += loss.item() * len(batch)
            correct += int((logits.argmax(1) == labels[batch]).sum())
            bar.update(len(batch))
            bar.set_postfix(loss=f"{loss_sum / bar.n:.3f}", acc=f"{correct / bar.n:.3f}", refresh=False)
        bar.close()
    return teacher.eval()


def train_checkpoint(
    config: TeacherConfig, splits: DataSplits, dataset: str, seed: int, device: torch.device, path: Path
) -> CheckpointInfo:
    """Train on the whole `splits.train`, evaluate on the whole `splits.test`, write the checkpoint at `path`."""
    started = time.perf_counter()
    teacher = train_resnet_teacher(config, splits.train, seed, device)
    train_seconds = time.perf_counter() - started
    logits = predict(teacher, splits.test, config.batch_size, device, desc="teacher test").logits
    tensors = {name: tensor.detach().contiguous().cpu() for name, tensor in teacher.state_dict().items()}
    info = CheckpointInfo(
        architecture=ARCHITECTURE,
        width=config.width,
        in_channels=splits.train.image_shape[0],
        image_size=list(splits.train.image_shape[1:]),
        class_names=list(splits.train.class_names),
        epochs=config.epochs,
        batch_size=config.batch_size,
        lr=config.lr,
        seed=seed,
        dataset=dataset,
        dataset_fingerprint=splits.train.fingerprint(),
        train_samples=len(splits.train),
        test_samples=len(splits.test),
        test_accuracy=float((logits.argmax(1) == splits.test.labels).float().mean()),
        train_seconds=round(train_seconds, 1),
        fingerprint=tensor_fingerprint(tensors),
    )
    with atomic_path(path) as temp:  # a crash never leaves a half-written checkpoint under the real name
        save_file(tensors, str(temp), metadata=info.to_metadata())
    return info


def tensor_fingerprint(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over every tensor's name, dtype, shape and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().contiguous().cpu()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}\n".encode())
        digest.update(tensor.view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def read_checkpoint(path: Path) -> tuple[CheckpointInfo, dict[str, torch.Tensor]]:
    """The checkpoint's metadata and tensors, after checking the tensors against its fingerprint."""
    if not path.is_file():
        raise TeacherError(f"teacher checkpoint {path} does not exist: train it with `fedtosc teacher train teacher=resnet_cifar ...`")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except (SafetensorError, OSError) as error:
        raise TeacherError(f"{path} is not a readable safetensors file ({error}); {_RETRAIN}") from error
    info = CheckpointInfo.from_metadata(metadata, path)
    found = tensor_fingerprint(tensors)
    if found != info.fingerprint:
        raise TeacherError(
            f"teacher checkpoint {path} is corrupt or was modified: its tensors hash to {found[:16]}..., "
            f"its metadata records fingerprint {info.fingerprint[:16]}...; {_RETRAIN}"
        )
    return info, tensors


def load_resnet_teacher(path: Path, device: torch.device, expect: ImageDataset | None = None) -> ResNetTeacher:
    """The verified teacher from `path`; with `expect`, refuse one trained for other classes or image shapes."""
    info, tensors = read_checkpoint(path)
    if info.architecture != ARCHITECTURE:
        raise TeacherError(f"{path} holds a {info.architecture!r} teacher; this fedtosc builds {ARCHITECTURE!r}")
    if expect is not None:
        trained_on = (info.in_channels, *info.image_size), tuple(info.class_names)
        wanted = expect.image_shape, expect.class_names
        if trained_on != wanted:
            raise TeacherError(
                f"teacher checkpoint {path} was trained on images {trained_on[0]} of classes {trained_on[1]}, "
                f"but this dataset has images {wanted[0]} of classes {wanted[1]}: pick the checkpoint for this "
                "dataset (teacher.checkpoint=...) or train one with `fedtosc teacher train teacher=resnet_cifar dataset=...`"
            )
    teacher = ResNetTeacher(info.in_channels, len(info.class_names), info.width)
    try:
        teacher.load_state_dict(tensors)
    except RuntimeError as error:
        raise TeacherError(f"{path} does not fit {ARCHITECTURE}(width={info.width}): {error}") from error
    teacher.teacher_id = f"{ARCHITECTURE}-{info.fingerprint[:16]}"
    return teacher.to(device).eval()
