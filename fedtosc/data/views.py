"""FKD-style augmented views: which crop and flip each stored soft label belongs to, and applying them.

With `knowledge.views=K` the builder runs the teacher on K views of every distillation image and
stores each view's parameters beside its knowledge, so a client replays exactly the view the
teacher labelled (as in FKD) instead of a fresh augmentation no teacher ever saw.

View parameters: int16 [N, K, 5] = (top, left, height, width, flip) per sample and view: a crop
box in pixels of the stored image and a horizontal-flip bit. View 0 of every sample is the
identity (the whole image, unflipped), so K=1 is the stored image as is. Flips are drawn for
every image, 1-channel digits included: a mirrored digit is a new input whose soft label the
teacher computed on that very input, so the student's target always matches what it sees.

`apply_views` crops, resizes back to the input resolution H x W (bilinear, align_corners=False,
no antialias: a crop is never larger than the image, so it only ever upsamples) and flips. It
computes in integers (fixed-point weights over 2H and 2W) and divides once in float64, so its
output is bit-identical on every device and build: builder and clients see the same pixels,
and the identity view gives exactly `images.float() / 255`. A teacher may resize further inside.
"""

from __future__ import annotations

import math

import torch

__all__ = ["VIEW_FIELDS", "apply_views", "draw_views", "identity_views"]

VIEW_FIELDS = 5  # top, left, height, width, flip
# Random-resized-crop ranges: share of the image's area and width/height ratio, as in FKD's crops
# but with a milder scale floor, since the stored images are small (8x8 digits, 32x32 CIFAR).
_AREA_SCALE = (0.6, 1.0)
_ASPECT_RATIO = (3 / 4, 4 / 3)
_FLIP_PROBABILITY = 0.5
_MAX_SIDE = torch.iinfo(torch.int16).max


def draw_views(num_samples: int, views: int, image_size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """K random views per sample: int16 [num_samples, views, 5] = (top, left, height, width, flip).

    Boxes lie inside the `image_size` (H, W) image; view 0 of every sample is the identity.
    The same generator state gives the same views on any machine (CPU float64 draws).
    """
    height, width = image_size
    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    if not (1 <= height <= _MAX_SIDE and 1 <= width <= _MAX_SIDE):
        raise ValueError(f"image_size must be in [1, {_MAX_SIDE}] per side for int16 views, got {image_size}")
    shape = (num_samples, views)

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(shape, generator=generator, dtype=torch.float64)

    area = height * width * uniform(*_AREA_SCALE)
    ratio = torch.exp(uniform(math.log(_ASPECT_RATIO[0]), math.log(_ASPECT_RATIO[1])))  # log-uniform, as torchvision
    crop_height = torch.sqrt(area / ratio).round().clamp(1, height)
    crop_width = torch.sqrt(area * ratio).round().clamp(1, width)
    top = (uniform(0, 1) * (height - crop_height + 1)).floor()
    left = (uniform(0, 1) * (width - crop_width + 1)).floor()
    flip = (uniform(0, 1) < _FLIP_PROBABILITY).to(torch.float64)
    params = torch.stack([top, left, crop_height, crop_width, flip], dim=-1).to(torch.int16)
    params[:, 0] = torch.tensor([0, 0, height, width, 0], dtype=torch.int16)
    return params


def identity_views(num_samples: int, views: int, image_size: tuple[int, int]) -> torch.Tensor:
    """int16 [num_samples, views, 5]: every view is the image as stored (rows without knowledge)."""
    params = torch.zeros(num_samples, views, VIEW_FIELDS, dtype=torch.int16)
    params[..., 2], params[..., 3] = image_size[0], image_size[1]
    return params


def apply_views(images: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Views of uint8 [B, C, H, W] images: float32 [B, C, H, W] in [0, 1], one view per image.

    `params` [B, 5] (top, left, height, width, flip), e.g. `view_params[positions, v]` of a
    store slice; any integer dtype, on any device (moved to the images' device).
    """
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"images must be uint8 [B, C, H, W], got {images.dtype} {tuple(images.shape)}")
    batch, channels, height, width = images.shape
    if tuple(params.shape) != (batch, VIEW_FIELDS) or params.is_floating_point():
        raise ValueError(f"params must be integer [B={batch}, {VIEW_FIELDS}], got {params.dtype} {tuple(params.shape)}")
    top, left, crop_height, crop_width, flip = params.to(images.device, torch.int64).unbind(dim=1)
    inside = (top >= 0) & (left >= 0) & (crop_height >= 1) & (crop_width >= 1)
    inside &= (top + crop_height <= height) & (left + crop_width <= width) & ((flip == 0) | (flip == 1))
    if not bool(inside.all()):
        raise ValueError(f"view params must be boxes inside the {height}x{width} image with a 0/1 flip bit")
    rows, row_weights = _bilinear_taps(top, crop_height, height)
    cols, col_weights = _bilinear_taps(left, crop_width, width)
    # Mirroring the output is reading the column taps right to left.
    mirrored = flip.bool()[:, None, None]
    cols = torch.where(mirrored, cols.flip(1), cols)
    col_weights = torch.where(mirrored, col_weights.flip(1), col_weights)

    pixels = images.to(torch.int64)
    row_index = rows.reshape(batch, 1, 2 * height, 1).expand(batch, channels, 2 * height, width)
    vertical = pixels.gather(2, row_index).view(batch, channels, height, 2, width)
    vertical = (vertical * row_weights.view(batch, 1, height, 2, 1)).sum(dim=3)  # scaled by 2H
    col_index = cols.reshape(batch, 1, 1, 2 * width).expand(batch, channels, height, 2 * width)
    both = vertical.gather(3, col_index).view(batch, channels, height, width, 2)
    both = (both * col_weights.view(batch, 1, 1, width, 2)).sum(dim=4)  # scaled by 2H * 2W, exact in int64
    # One correctly rounded float64 division, then float32: the same on every device.
    return (both.to(torch.float64) / (255 * 4 * height * width)).to(torch.float32)


def _bilinear_taps(start: torch.Tensor, length: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Source pixels and integer weights (summing to 2 * size) resizing crops [start, start + length) to `size`.

    Returns index [B, size, 2] (absolute, into the image) and weight [B, size, 2] int64.
    """
    # Output pixel j samples crop coordinate (j + 1/2) * length / size - 1/2 (align_corners=False);
    # times 2 * size that is the integer (2j + 1) * length - size, clamped at 0 as torch's bilinear is.
    output = torch.arange(size, device=start.device)
    scaled = ((2 * output + 1) * length[:, None] - size).clamp(min=0)
    low = scaled // (2 * size)
    high_weight = scaled - low * (2 * size)
    high = torch.minimum(low + 1, length[:, None] - 1)
    index = start[:, None, None] + torch.stack([low, high], dim=-1)
    weight = torch.stack([2 * size - high_weight, high_weight], dim=-1)
    return index, weight
