"""The on-device student: a semantic codec trained end to end through the channel.

    image -> SemanticEncoder -> SNRGate (channel-adaptive) -> VariationalHead (mu, logvar)
          -> complex symbols, power-normalized (trailing ones masked by RateController)
          -> Channel at the sample's SNR -> SemanticDecoder (SNR-aware) -> class logits

Shapes: images [B, C, H, W] float in [0, 1]; snr_db [B] float (dB, design.md convention).
`channel_uses` counts the complex symbols actually sent per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fedtosc.channels import Channel, complex_to_real, normalize_power, real_to_complex
from fedtosc.config import StudentConfig

__all__ = ["RateController", "SNRGate", "SemanticEncoder", "StudentOutput", "StudentCodec", "build_student"]

# SNRs are fed to the networks scaled to roughly unit range.
_SNR_SCALE_DB = 20.0


@dataclass
class StudentOutput:
    logits: torch.Tensor  # [B, num_classes]
    mu: torch.Tensor  # [B, 2n] mean of q(z|x), before the channel
    logvar: torch.Tensor  # [B, 2n]
    channel_uses: torch.Tensor  # [B] complex symbols sent per sample
    received: torch.Tensor  # [B, 2n] real view of the equalized received symbols


class SemanticEncoder(nn.Module):
    """A small CNN: three conv stages (the last two stride 2), global pooling, a linear map."""

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
    """ADJSCC-style attention: features scaled by a gate computed from (features, SNR)."""

    def __init__(self, feature_dim: int, hidden_dim: int = 64) -> None:
        super().__init__()
        self.gate = nn.Sequential(
            nn.Linear(feature_dim + 1, hidden_dim),
            nn.ReLU(inplace=True),
            nn.Linear(hidden_dim, feature_dim),
            nn.Sigmoid(),
        )

    def forward(self, features: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        condition = torch.cat([features, (snr_db / _SNR_SCALE_DB).unsqueeze(1)], dim=1)
        return features * self.gate(condition)


class RateController(nn.Module):
    """VL-VFE-style rate adaptation: fewer complex symbols at higher SNR.

    The number of active symbols falls linearly from `max_uses` at `low_snr_db` to
    `min_uses` at `high_snr_db`; trailing symbols are masked (not transmitted).
    """

    def __init__(self, max_uses: int, min_uses: int, low_snr_db: float = 0.0, high_snr_db: float = 20.0) -> None:
        super().__init__()
        self.max_uses, self.min_uses = max_uses, min_uses
        self.low_snr_db, self.high_snr_db = low_snr_db, high_snr_db

    def active_uses(self, snr_db: torch.Tensor) -> torch.Tensor:
        progress = ((snr_db - self.low_snr_db) / (self.high_snr_db - self.low_snr_db)).clamp(0.0, 1.0)
        return torch.round(self.max_uses - progress * (self.max_uses - self.min_uses)).long()

    def forward(self, snr_db: torch.Tensor) -> torch.Tensor:
        """Mask [B, max_uses] in {0, 1}: 1 where the symbol is sent."""
        positions = torch.arange(self.max_uses, device=snr_db.device)
        return (positions.unsqueeze(0) < self.active_uses(snr_db).unsqueeze(1)).float()


class StudentCodec(nn.Module):
    """Encoder, channel-adaptive module, variational head, channel and decoder, end to end."""

    def __init__(self, in_channels: int, num_classes: int, config: StudentConfig) -> None:
        super().__init__()
        self.channel_uses = config.channel_uses
        self.encoder = SemanticEncoder(in_channels, config.width, config.feature_dim)
        self.snr_gate = SNRGate(config.feature_dim) if config.adaptive else None
        self.rate = RateController(config.channel_uses, config.min_channel_uses) if config.rate_adaptive else None
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

    def forward(self, images: torch.Tensor, snr_db: torch.Tensor, channel: Channel) -> StudentOutput:
        features = self.encoder(images)
        if self.snr_gate is not None:
            features = self.snr_gate(features, snr_db)
        mu, logvar = self.mu(features), self.logvar(features).clamp(-10.0, 10.0)
        # Sampling z ~ q(z|x) while training is what makes the IB rate term meaningful.
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        mask = self.rate(snr_db) if self.rate is not None else None
        symbols = normalize_power(real_to_complex(z), mask)
        received = channel(symbols, snr_db)
        if mask is not None:
            received = received * mask
        received_real = complex_to_real(received)
        decoder_in = received_real
        if self.snr_gate is not None:
            decoder_in = torch.cat([received_real, (snr_db / _SNR_SCALE_DB).unsqueeze(1)], dim=1)
        uses = mask.sum(dim=1) if mask is not None else torch.full_like(snr_db, float(self.channel_uses))
        return StudentOutput(self.decoder(decoder_in), mu, logvar, uses, received_real)


def build_student(in_channels: int, num_classes: int, config: StudentConfig) -> StudentCodec:
    return StudentCodec(in_channels, num_classes, config)
