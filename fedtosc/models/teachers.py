"""Teachers: one interface (float images in [0, 1] -> logits and an embedding) for both kinds.

- `ClipTeacher`: any open_clip model, weights from a pretrained tag (hub or its cache) or a
  local checkpoint, with a zero-shot head from class-name prompts (the dataset's template
  ensemble, `fedtosc.data.prompts`) or a linear-probe head.
- `ServerCNNTeacher`: the offline fallback, a CNN much larger than the student, trained on
  the server's labelled data and cached by a fingerprint of its data and config. The cache
  entry records its tensors' sha256 digests; one that fails them is retrained, with a
  `TeacherCacheRebuilt` warning.
Every head is linear: `Teacher.linear_head` gives its weight and bias.
Teachers run batched in inference mode (`predict`), on a GPU when one is given.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from tqdm import tqdm

from fedtosc.atomic_write import atomic_path
from fedtosc.cache_lock import entry_lock
from fedtosc.config import TeacherConfig
from fedtosc.data.datasets import ImageDataset
from fedtosc.data.prompts import check_templates, prompt_templates
from fedtosc.data.views import apply_views
from fedtosc.digests import DIGESTS_KEY, digest_problem, tensor_digests
from fedtosc.models.outputs import TeacherOutputs
from fedtosc.precision import tf32

__all__ = [
    "ClipTeacher",
    "ServerCNNTeacher",
    "Teacher",
    "TeacherCacheRebuilt",
    "TeacherError",
    "build_clip_teacher",
    "load_or_train_server_teacher",
    "predict",
]


_MODEL_SCHEMAS = ("hf-hub:", "local-dir:")


class TeacherError(RuntimeError):
    """A teacher cannot be built; the message says how to supply what is missing."""


class TeacherCacheRebuilt(UserWarning):
    """A cached server teacher failed its checks (unreadable, corrupt, stale) and is being retrained;
    the message names the file and what was wrong with it."""


class Teacher(nn.Module):
    """Base: `forward(images [B, C, H, W] in [0, 1]) -> TeacherOutputs`."""

    teacher_id: str
    display_name: str

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        """The teacher's head alone: embeddings [B, D] -> logits [B, C] (as in `forward`)."""
        raise NotImplementedError

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        """`(weight [C, D], bias [C])`, float32 copies on the CPU: `classify(e) == e @ weight.T + bias`."""
        raise NotImplementedError


class ServerCNNTeacher(Teacher):
    """A VGG-style CNN: four conv stages of width w, 2w, 4w, 8w, then a linear classifier."""

    def __init__(self, in_channels: int, num_classes: int, width: int) -> None:
        super().__init__()
        stages, channels = [], in_channels
        for stage, out_channels in enumerate((width, 2 * width, 4 * width, 8 * width)):
            stages += [
                nn.Conv2d(channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
                nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            if stage < 3:
                stages.append(nn.MaxPool2d(2, ceil_mode=True))
            channels = out_channels
        self.features = nn.Sequential(*stages, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(channels, num_classes)
        self.display_name = f"server_cnn(width={width})"
        self.teacher_id = ""

    def forward(self, images: torch.Tensor) -> TeacherOutputs:
        embeddings = self.features(images * 2.0 - 1.0)
        return TeacherOutputs(logits=self.classify(embeddings), embeddings=embeddings)

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.classifier(embeddings)

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _cpu_copy(self.classifier.weight), _cpu_copy(self.classifier.bias)


def _cpu_copy(tensor: torch.Tensor) -> torch.Tensor:
    """Detached float32 copy on the CPU: a caller may modify it without touching the teacher."""
    return tensor.detach().to(device="cpu", dtype=torch.float32, copy=True)


def _teacher_fingerprint(config: TeacherConfig, data: ImageDataset, seed: int) -> str:
    spec = {"width": config.width, "epochs": config.epochs, "lr": config.lr, "seed": seed, "data": data.fingerprint()}
    return "server_cnn-" + hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def load_or_train_server_teacher(
    config: TeacherConfig, labelled: ImageDataset, seed: int, device: torch.device
) -> ServerCNNTeacher:
    """Train the fallback teacher on the server's labelled data, or reuse the cached one."""
    teacher = ServerCNNTeacher(labelled.image_shape[0], len(labelled.class_names), config.width)
    teacher.teacher_id = _teacher_fingerprint(config, labelled, seed)
    cache_path = Path(config.cache_dir).expanduser() / f"{teacher.teacher_id}.safetensors"
    with entry_lock(cache_path):  # another process training this very teacher: wait, then load it
        if cache_path.is_file():
            problem = _load_cached(teacher, cache_path)
            if problem is None:
                return teacher.to(device).eval()
            # The entry derives from the data and config alone, so retraining it (atomically replaced
            # below) is the fix and the run goes on; a corrupt or stale file is still news.
            message = f"retraining the cached server teacher {cache_path}: {problem}"
            warnings.warn(message, TeacherCacheRebuilt, stacklevel=2)
        _train_classifier(teacher, labelled, config, seed, device)
        tensors = {k: v.contiguous().cpu() for k, v in teacher.state_dict().items()}
        digests = json.dumps(tensor_digests({k: v.numpy() for k, v in tensors.items()}), sort_keys=True)
        with atomic_path(cache_path) as temp:  # a crash never leaves a half-written cache entry
            save_file(tensors, str(temp), metadata={DIGESTS_KEY: digests})
        return teacher.eval()


def _load_cached(teacher: ServerCNNTeacher, path: Path) -> str | None:
    """Load the cache entry at `path` into `teacher` once it passes every check; else why it failed,
    with `teacher` untouched, so the retraining starts from the same initial weights as a fresh one."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            state = {name: handle.get_tensor(name) for name in handle.keys()}
        problem = digest_problem({name: tensor.numpy() for name, tensor in state.items()}, metadata)
    except Exception as error:  # safetensors raises its own error types and OSError; all mean "unreadable"
        return f"it is not a readable safetensors file (truncated or corrupted?): {error}"
    if problem is not None:
        return problem
    # load_state_dict would copy the tensors that fit before it raised on one that does not.
    layout = {name: (tensor.dtype, tensor.shape) for name, tensor in teacher.state_dict().items()}
    if {name: (tensor.dtype, tensor.shape) for name, tensor in state.items()} != layout:
        return f"its tensors do not fit {teacher.display_name}: written by another version of it"
    teacher.load_state_dict(state)
    return None


def _train_classifier(
    teacher: ServerCNNTeacher, data: ImageDataset, config: TeacherConfig, seed: int, device: torch.device
) -> None:
    generator = torch.Generator().manual_seed(seed)
    teacher.to(device).train()
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=config.lr, weight_decay=5e-4)
    steps_per_epoch = max(1, (len(data) + config.batch_size - 1) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=max(1, config.epochs * steps_per_epoch)
    )
    for _ in tqdm(range(config.epochs), desc="training server teacher", unit="epoch"):
        order = torch.randperm(len(data), generator=generator)
        for start in range(0, len(data), config.batch_size):
            batch = order[start : start + config.batch_size]
            images = _augment(data.images[batch].float().div(255.0), generator).to(device)
            loss = F.cross_entropy(teacher(images).logits, data.labels[batch].to(device))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    teacher.eval()


def _augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random 1-pixel shifts (and flips for RGB): cheap regularization for a small labelled set."""
    shift = torch.randint(-1, 2, (2,), generator=generator).tolist()
    images = torch.roll(images, shifts=shift, dims=(2, 3))
    if images.shape[1] == 3 and torch.rand((), generator=generator) < 0.5:
        images = images.flip(3)
    return images


class ClipTeacher(Teacher):
    """An open_clip model with a linear head over its normalized image embedding.

    `head_kind` (zero_shot | linear_probe) names where the head came from, in the teacher_id.
    """

    def __init__(
        self,
        model: nn.Module,
        head: torch.Tensor,
        bias: torch.Tensor,
        logit_scale: float,
        model_name: str,
        weights: str,
        head_kind: str,
    ) -> None:
        super().__init__()
        self.visual = model.visual
        self.register_buffer("head", head)  # [C, D]: unit-norm class embeddings (zero-shot) or probe weights
        self.register_buffer("bias", bias)  # [C]: zeros for zero-shot
        self.logit_scale = logit_scale
        size = model.visual.image_size
        self.image_size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
        cfg = getattr(model.visual, "preprocess_cfg", {})
        self.register_buffer("mean", torch.tensor(cfg.get("mean", (0.48145466, 0.4578275, 0.40821073))).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(cfg.get("std", (0.26862954, 0.26130258, 0.27577711))).view(1, 3, 1, 1))
        self.display_name = f"clip:{model_name}"
        weight, bias = self.linear_head()  # the head as applied, so a new scale or bias is a new teacher
        digest = hashlib.sha256(weight.numpy().tobytes() + bias.numpy().tobytes()).hexdigest()[:12]
        self.teacher_id = f"clip-{model_name}-{weights}-{head_kind}-{digest}"

    def forward(self, images: torch.Tensor) -> TeacherOutputs:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        if tuple(images.shape[-2:]) != self.image_size:
            images = F.interpolate(images, size=self.image_size, mode="bicubic", align_corners=False).clamp(0, 1)
        embeddings = F.normalize(self.visual((images - self.mean) / self.std), dim=-1)
        return TeacherOutputs(logits=self.classify(embeddings), embeddings=embeddings)

    def classify(self, embeddings: torch.Tensor) -> torch.Tensor:
        return self.logit_scale * embeddings @ self.head.T + self.bias

    def linear_head(self) -> tuple[torch.Tensor, torch.Tensor]:
        return _cpu_copy(self.logit_scale * self.head), _cpu_copy(self.bias)


def build_clip_teacher(
    config: TeacherConfig,
    class_names: tuple[str, ...],
    device: torch.device,
    labelled: ImageDataset | None = None,
    *,
    dataset_name: str,
) -> ClipTeacher:
    """Create the open_clip model with its weights, then its zero-shot or linear-probe head.

    `dataset_name` picks the zero-shot prompt ensemble unless teacher.prompt_templates is set.
    """
    import open_clip

    # `hf-hub:org/repo` and `local-dir:/path` name a model by where its config lives, not a registry entry.
    if not config.model.startswith(_MODEL_SCHEMAS) and config.model not in open_clip.list_models():
        known = ", ".join(open_clip.list_models()[:12])
        raise TeacherError(
            f"unknown open_clip model teacher.model={config.model!r}; known include: {known}, ... "
            f"(all: open_clip.list_models()), or {' / '.join(s + '...' for s in _MODEL_SCHEMAS)}"
        )
    weights = _clip_weights_source(config)
    try:
        model = open_clip.create_model(config.model, pretrained=weights, device=device)
    except Exception as error:  # open_clip raises bare RuntimeError/OSError/HF errors for missing weights
        raise TeacherError(
            f"could not load CLIP weights {weights!r} for {config.model}: {error}\n"
            "Offline? Supply the weights one of two ways: teacher.checkpoint=/path/to/open_clip_model.safetensors "
            "(a local file), or download once on a connected machine and copy the Hugging Face cache (HF_HOME) "
            "here, then use teacher.pretrained=<tag>. List tags with open_clip.list_pretrained()."
        ) from error
    model.eval()
    names = list(config.class_names or class_names)
    if len(names) != len(class_names):
        raise TeacherError(f"teacher.class_names has {len(names)} names but the dataset has {len(class_names)} classes")
    weights = weights or "random"
    if config.head == "zero_shot":
        templates = _prompt_templates(config, dataset_name)
        head = _zero_shot_head(model, open_clip.get_tokenizer(config.model), names, templates, device).cpu()
        bias = torch.zeros(len(names))
        logit_scale = float(model.logit_scale.detach().exp().clamp(max=100.0))
    else:
        if labelled is None:
            raise TeacherError("teacher.head=linear_probe needs the server's labelled data")
        # The probe is fitted on embeddings alone, which do not depend on the head this encoder carries.
        zeros = torch.zeros(len(names), model.visual.output_dim)
        encoder = ClipTeacher(model, zeros, torch.zeros(len(names)), 1.0, config.model, weights, config.head)
        head, bias = _fit_linear_probe(encoder, labelled, config, device)
        logit_scale = 1.0
    return ClipTeacher(model, head, bias, logit_scale, config.model, weights, config.head).to(device).eval()


def _prompt_templates(config: TeacherConfig, dataset_name: str) -> list[str]:
    templates = list(prompt_templates(dataset_name) if config.prompt_templates is None else config.prompt_templates)
    try:
        check_templates(templates)
    except ValueError as error:
        raise TeacherError(f"teacher.prompt_templates: {error}") from error
    return templates


def _clip_weights_source(config: TeacherConfig) -> str | None:
    if config.checkpoint:
        path = Path(config.checkpoint).expanduser()
        if not path.is_file():
            raise TeacherError(f"teacher.checkpoint={path} does not exist")
        return str(path)
    if config.pretrained:
        return config.pretrained
    if config.allow_random_weights:
        return None
    raise TeacherError(
        "the CLIP teacher needs weights: set teacher.pretrained=<tag> (e.g. laion2b_s34b_b79k; read from the "
        "Hugging Face cache, downloaded when online) or teacher.checkpoint=<local file>"
    )


@torch.inference_mode()
def _zero_shot_head(model: nn.Module, tokenizer, names: list[str], templates: list[str], device) -> torch.Tensor:  # noqa: ANN001
    rows = []
    for name in names:
        tokens = tokenizer([template.format(name) for template in templates]).to(device)
        text = F.normalize(model.encode_text(tokens), dim=-1).mean(dim=0)
        rows.append(F.normalize(text, dim=0))
    return torch.stack(rows)


def _fit_linear_probe(
    encoder: ClipTeacher, labelled: ImageDataset, config: TeacherConfig, device  # noqa: ANN001
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logistic regression on frozen, normalized embeddings -> (weight [C, D], bias [C]) on the CPU.

    The probe's softmax over `embeddings @ weight.T + bias` is exactly its `predict_proba`.
    """
    from sklearn.linear_model import LogisticRegression

    num_classes = len(labelled.class_names)
    missing = sorted(set(range(num_classes)) - set(labelled.labels.tolist()))
    if missing:  # the probe would have no row for them, and the head would score fewer classes than exist
        names = ", ".join(labelled.class_names[label] for label in missing)
        raise TeacherError(f"teacher.head=linear_probe: the server's labelled data has no sample of class {names}")
    embeddings = predict(encoder, labelled, config.batch_size, device, desc="probe embeddings").embeddings
    probe = LogisticRegression(max_iter=1000).fit(embeddings.numpy(), labelled.labels.numpy())
    weight = torch.from_numpy(probe.coef_).float()
    bias = torch.from_numpy(probe.intercept_).float()
    if num_classes == 2:
        # sklearn keeps one row w for two classes: p(class 1) = sigmoid(w.x + b). The rows -w/2 and w/2
        # (bias likewise) give the same probabilities under a softmax, with one logit per class.
        weight = torch.cat([-weight / 2, weight / 2])
        bias = torch.cat([-bias / 2, bias / 2])
    return weight, bias


@torch.inference_mode()
def predict(
    teacher: Teacher,
    data: ImageDataset,
    batch_size: int,
    device: torch.device,
    desc: str = "teacher inference",
    progress: tqdm | None = None,
    view_params: torch.Tensor | None = None,
) -> TeacherOutputs:
    """Run the teacher over every sample, batched, in inference mode; outputs float32 on the CPU.

    `progress`: a caller's bar to advance by samples (e.g. the knowledge builder's); else its own.
    `view_params`: [N, 5] one augmented view per sample (data/views.py): the teacher sees
    `apply_views(images, view_params)` instead of the images as stored. On a GPU it runs in full
    float32, not TF32, so its outputs match the CPU's (fedtosc/precision.py).
    """
    teacher.eval()
    bar = progress if progress is not None else tqdm(total=len(data), desc=desc, unit="img", leave=False)
    logits, embeddings = [], []
    for start in range(0, len(data), batch_size):
        # uint8 crosses to the device (4x fewer bytes than float) and is scaled there.
        images = data.images[start : start + batch_size].to(device, non_blocking=True)
        if view_params is None:
            images = images.float().div(255.0)
        else:
            images = apply_views(images, view_params[start : start + batch_size])
        with tf32(False):
            outputs = teacher(images)
        logits.append(outputs.logits.float().cpu())
        embeddings.append(outputs.embeddings.float().cpu())
        bar.update(len(images))
    if progress is None:
        bar.close()
    return TeacherOutputs(logits=torch.cat(logits), embeddings=torch.cat(embeddings))
