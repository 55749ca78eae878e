"""The on-device student: a semantic codec trained end to end through the channel.

    image -> SemanticEncoder -> SNRGate (channel-adaptive) -> variational head (mu, logvar)
          -> complex symbols, power-normalized over the symbols the RateController keeps
          -> Channel at the sample's SNR -> SNR-aware decoder -> class logits

Shapes: images [B, C, H, W] float in [0, 1]; snr_db [B] (or a scalar) float in dB, design.md
convention. `channel_uses` counts the complex symbols actually sent per sample.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from fedtosc.channels import Channel, complex_to_real, normalize_power, real_to_complex, validate_snr_db
from fedtosc.config import StudentConfig

__all__ = ["RateController", "SNRGate", "SemanticEncoder", "StudentCodec", "StudentOutput", "build_student"]

# SNRs are fed to the networks scaled to roughly unit range.
_SNR_SCALE_DB = 20.0
# Keeps exp(logvar) finite; wider than any variance the rate term lets the head reach.
_LOGVAR_LIMIT = 10.0


@dataclass
class StudentOutput:
    """What one pass produced. Coordinates that were not sent are reported as the prior N(0, 1)
    (mu = 0, logvar = 0), so they add nothing to the IB rate term KL(q(z|x) || N(0, I))."""

    logits: torch.Tensor  # [B, num_classes]
    mu: torch.Tensor  # [B, 2n] mean of q(z|x), before the channel
    logvar: torch.Tensor  # [B, 2n]
    channel_uses: torch.Tensor  # [B] float: complex symbols sent per sample
    received: torch.Tensor  # [B, 2n] real view (real | imag) of the equalized received symbols; 0 where not sent


class SemanticEncoder(nn.Module):
    """A small CNN: three conv stages (the last two stride 2), global pooling, a linear map.

    Works for any input of at least 4x4 pixels (8x8 digits -> 2x2 maps, 32x32 -> 8x8).
    images [B, C, H, W] in [0, 1] -> features [B, feature_dim] >= 0.
    """

    def __init__(self, in_channels: int, width: int, feature_dim: int) -> None:
        super().__init__()
        self.layers = nn.Sequential(
            _conv_block(in_channels, width, stride=1),
            _conv_block(width, 2 * width, stride=2),
            _conv_block(2 * width, 4 * width, stride=2),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.Linear(4 * width, feature_dim),
            nn.ReLU(inplace=True),
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.layers(images * 2.0 - 1.0)


def _conv_block(in_channels: int, out_channels: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SNRGate(nn.Module):
    """ADJSCC-style attention: features [B, d] scaled by a gate in (0, 1)^d computed from (features, SNR).

    It sits right before the variational head, so the SNR decides how the (later power-normalized)
    symbol energy is spread over the semantic features; on pooled features a channel-wise gate is the
    same as ADJSCC's gating of the last feature map, since pooling commutes with channel scaling.
    """

    def __init__(self, feature_dim: int, hidden_dim: int = 64) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.Linear(feature_dim + 1, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, feature_dim),
            nn.Sigmoid(),
        )

    def forward(self, features: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        return features * self.gate(torch.cat([features, _snr_feature(snr_db)], dim=1))


class RateController(nn.Module):
    """VL-VFE-style rate adaptation: fewer complex symbols at higher SNR.

    The number of active symbols falls linearly from `max_uses` at `low_snr_db` (and below) to
    `min_uses` at `high_snr_db` (and above), rounded to an integer, so it never rises with SNR.
    Trailing symbols are masked (not transmitted); training puts what matters most up front.
    """

    def __init__(self, max_uses: int, min_uses: int, low_snr_db: float = 0.0, high_snr_db: float = 20.0) -> None:
        super().__init__()
        if not 1 <= min_uses <= max_uses:
            raise ValueError(f"need 1 <= min_uses <= max_uses, got min_uses={min_uses}, max_uses={max_uses}")
        if not (math.isfinite(low_snr_db) and math.isfinite(high_snr_db) and low_snr_db < high_snr_db):
            raise ValueError(f"need finite low_snr_db < high_snr_db, got {low_snr_db} and {high_snr_db}")
        self.max_uses, self.min_uses = max_uses, min_uses
        self.low_snr_db, self.high_snr_db = low_snr_db, high_snr_db

    def active_uses(self, snr_db: torch.Tensor) -> torch.Tensor:
        """Symbols sent per sample, [B] int64, from snr_db [B] in dB."""
        progress = ((snr_db - self.low_snr_db) / (self.high_snr_db - self.low_snr_db)).clamp(0.0, 1.0)
        return torch.round(self.max_uses - progress * (self.max_uses - self.min_uses)).long()

    def forward(self, snr_db: torch.Tensor) -> torch.Tensor:
        """Mask [B, max_uses] float in {0, 1}: 1 where the symbol is sent."""
        positions = torch.arange(self.max_uses, device=snr_db.device)
        return (positions.unsqueeze(0) < self.active_uses(snr_db).unsqueeze(1)).float()

    def extra_repr(self) -> str:
        return f"uses={self.max_uses}->{self.min_uses}, snr_db={self.low_snr_db:g}->{self.high_snr_db:g}"


class StudentCodec(nn.Module):
    """Encoder, channel-adaptive module, variational head, channel and decoder, end to end.

    `config.adaptive=False` removes the SNR gate and the decoder's SNR input (non-adaptive baseline);
    `config.rate_adaptive=False` always sends all `config.channel_uses` symbols.
    """

    def __init__(self, in_channels: int, num_classes: int, config: StudentConfig) -> None:
        super().__init__()
        self.channel_uses = config.channel_uses
        self.encoder = SemanticEncoder(in_channels, config.width, config.feature_dim)
        self.snr_gate = SNRGate(config.feature_dim) if config.adaptive else None
        self.rate = None
        if config.rate_adaptive:
            self.rate = RateController(
                config.channel_uses, config.min_channel_uses, config.rate_low_snr_db, config.rate_high_snr_db
            )
        self.mu = nn.Linear(config.feature_dim, 2 * config.channel_uses)
        self.logvar = nn.Linear(config.feature_dim, 2 * config.channel_uses)
        decoder_in = 2 * config.channel_uses + (1 if config.adaptive else 0)
        self.decoder = nn.Sequential(
            nn.Linear(decoder_in, config.feature_dim),
            nn.ReLU(inplace=True),
            nn.Linear(config.feature_dim, num_classes),
        )

    def encoder_modules(self) -> list[nn.Module]:
        """What runs on the device before the channel (for size and latency figures)."""
        return [m for m in (self.encoder, self.snr_gate, self.mu, self.logvar) if m is not None]

    def symbol_mask(self, snr_db: torch.Tensor) -> torch.Tensor:
        """[B, n] float in {0, 1}: which complex symbols are sent at each sample's SNR."""
        if self.rate is None:
            return torch.ones(snr_db.shape[0], self.channel_uses, device=snr_db.device)
        return self.rate(snr_db)

    def encode_symbols(self, images: torch.Tensor, snr_db: torch.Tensor | float) -> torch.Tensor:
        """The on-device inference path: images -> [B, n] complex64 symbols, unit average power over
        the sent ones, 0 where not sent (the mean mu is sent; no sampling)."""
        snr_db = _per_sample_snr(snr_db, images)
        return normalize_power(real_to_complex(self.mu(self._features(images, snr_db))), self.symbol_mask(snr_db))

    def forward(self, images: torch.Tensor, snr_db: torch.Tensor | float, channel: Channel) -> StudentOutput:
        """Raises ValueError for an SNR that is not finite or outside the channels' range."""
        snr_db = _per_sample_snr(snr_db, images)
        features = self._features(images, snr_db)
        mu, logvar = self.mu(features), self.logvar(features).clamp(-_LOGVAR_LIMIT, _LOGVAR_LIMIT)
        # Sampling z ~ q(z|x) while training is what makes the IB rate term meaningful; eval sends mu.
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        mask = self.symbol_mask(snr_db)
        received = channel(normalize_power(real_to_complex(z), mask), snr_db) * mask
        received_real = complex_to_real(received)
        decoder_in = received_real
        if self.snr_gate is not None:
            decoder_in = torch.cat([received_real, _snr_feature(snr_db)], dim=1)
        sent = mask.repeat(1, 2)  # the real view lists real parts, then imaginary parts
        return StudentOutput(self.decoder(decoder_in), mu * sent, logvar * sent, mask.sum(dim=1), received_real)

    def _features(self, images: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        features = self.encoder(images)
        return features if self.snr_gate is None else self.snr_gate(features, snr_db)


def _snr_feature(snr_db: torch.Tensor) -> torch.Tensor:
    return (snr_db / _SNR_SCALE_DB).unsqueeze(1)


def _per_sample_snr(snr_db: torch.Tensor | float, images: torch.Tensor) -> torch.Tensor:
    """Validated [B] float32 SNR on the images' device; a scalar applies to the whole batch.

    Checked before any use: a NaN would otherwise turn into a garbage symbol mask.
    """
    snr = validate_snr_db(snr_db).to(images.device)
    batch_size = images.shape[0]
    if snr.dim() == 0:
        return snr.expand(batch_size)
    if snr.shape != (batch_size,):
        raise ValueError(f"snr_db must be a scalar or shape [{batch_size}], got {tuple(snr.shape)}")
    return snr


def build_student(in_channels: int, num_classes: int, config: StudentConfig) -> StudentCodec:
    """The student for images with `in_channels` channels and `num_classes` classes."""
    return StudentCodec(in_channels, num_classes, config)
