"""The on-device student: a semantic codec trained end to end through the channel.

    transmitter: image -> SemanticEncoder -> SNRGate(features, tx SNR) -> variational head (mu, logvar)
                 -> RateController(tx SNR) keeps the first m of n symbols -> power normalization
    channel:     AWGN / Rayleigh / Rician at the sample's SNR (docs/architecture.md: conventions)
    receiver:    received symbols + receiver state (per-symbol SNR, which symbols came)
                 -> decoder -> class logits, and a projection into the teacher's embedding space

What each side knows about the channel decides what it may condition on: the transmitter knows
the nominal (fed-back) SNR of its link; the receiver with perfect CSI knows every symbol's
effective SNR after equalization, |h|^2 * SNR per fading block, and without CSI only the nominal
SNR. `adaptive=False` removes every SNR input and the controller (the non-adaptive baseline).

Shapes: images [B, C, H, W] float in [0, 1]; snr_db [B] (or a scalar) float in dB.
`channel_uses` counts the complex symbols actually sent per sample.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from fedtosc.channels import (
    SNR_DB_LIMITS,
    Channel,
    complex_to_real,
    normalize_power,
    real_to_complex,
    validate_snr_db,
)
from fedtosc.config import StudentConfig

__all__ = ["RateController", "SNRGate", "SemanticEncoder", "StudentCodec", "StudentOutput", "build_student"]

# SNRs are fed to the networks scaled to roughly unit range.
_SNR_SCALE_DB = 20.0
# Keeps exp(logvar) finite; wider than any variance the rate term lets the head reach.
_LOGVAR_LIMIT = 10.0
# The receiver's per-symbol SNR feature is clipped to the channels' lowest SNR: a deep fade
# (|h|^2 -> 0) would otherwise give an unbounded negative input, and a symbol below it carries nothing.
_RX_SNR_FLOOR_DB = SNR_DB_LIMITS[0]
# The controller starts by sending almost everything (sigmoid(3) = 0.95 of the range above the floor),
# so early training is not starved of symbols before the task has shaped the encoder.
_CONTROLLER_INITIAL_LOGIT = 3.0


@dataclass
class StudentOutput:
    """What one pass produced. Coordinates that were not sent are reported as the prior N(0, 1)
    (mu = 0, logvar = 0), so they add nothing to the IB rate term KL(q(z|x) || N(0, I))."""

    logits: torch.Tensor  # [B, num_classes]
    mu: torch.Tensor  # [B, 2n] mean of q(z|x), before the channel
    logvar: torch.Tensor  # [B, 2n]
    # [B] float: complex symbols sent per sample. Its value is the hard count; while training with a
    # learned controller its gradient is the soft count's, so a penalty on it trains the controller.
    channel_uses: torch.Tensor
    received: torch.Tensor  # [B, 2n] real view (real | imag) of the equalized received symbols; 0 where not sent
    projected: torch.Tensor | None = None  # [B, D] decoded features in the teacher's embedding space


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
    """Learned, SNR-conditioned rate (in the spirit of VL-VFE): how many of the n symbols to send.

    A small network maps the transmitter's SNR to a length L(snr) in [min_uses, max_uses]; the
    first round(L) symbols are sent and the rest are switched off. The importance order is learned
    by the encoder: since the tail is what gets cut, training puts what matters most up front (as
    nested dropout does). Forward values are hard (a real transmitter sends whole symbols); the
    gradient is that of a soft step sigmoid((L - i - 1/2) / softness) over positions i
    (straight-through), so the task loss and the rate penalty both reach the controller.
    """

    def __init__(self, max_uses: int, min_uses: int, hidden_dim: int = 16, softness: float = 0.5) -> None:
        super().__init__()
        if not 1 <= min_uses <= max_uses:
            raise ValueError(f"need 1 <= min_uses <= max_uses, got min_uses={min_uses}, max_uses={max_uses}")
        self.max_uses, self.min_uses, self.softness = max_uses, min_uses, softness
        self.net = nn.Sequential(nn.Linear(1, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, 1))
        with torch.no_grad():
            self.net[-1].bias.fill_(_CONTROLLER_INITIAL_LOGIT)
        self.register_buffer("positions", torch.arange(max_uses, dtype=torch.float32) + 0.5, persistent=False)

    def length(self, snr_db: torch.Tensor) -> torch.Tensor:
        """The continuous length L [B] in [min_uses, max_uses] from snr_db [B] in dB."""
        fraction = torch.sigmoid(self.net(_snr_feature(snr_db))).squeeze(1)
        return self.min_uses + (self.max_uses - self.min_uses) * fraction

    def active_uses(self, snr_db: torch.Tensor) -> torch.Tensor:
        """Symbols sent per sample, [B] int64."""
        return self.forward(snr_db).detach().sum(dim=1).round().long()

    def forward(self, snr_db: torch.Tensor) -> torch.Tensor:
        """Mask [B, max_uses] with values in {0, 1}: 1 where the symbol is sent."""
        length = self.length(snr_db).unsqueeze(1)
        hard = (self.positions < length).to(length.dtype)
        if not self.training:
            return hard
        soft = torch.sigmoid((length - self.positions) / self.softness)
        return hard + soft - soft.detach()

    def extra_repr(self) -> str:
        return f"uses={self.min_uses}..{self.max_uses}, learned"


class StudentCodec(nn.Module):
    """Encoder, channel-adaptive module, variational head, channel and decoder, end to end.

    `config.adaptive=False`: no SNR gate, no controller, a decoder blind to the channel state.
    `config.rate_adaptive=False`: always send all `config.channel_uses` symbols.
    `embedding_dim`: width of the teacher's embedding; when given, the receiver also projects its
    decoded features into that space (the feature-distillation term's target).
    """

    def __init__(
        self, in_channels: int, num_classes: int, config: StudentConfig, embedding_dim: int | None = None
    ) -> None:
        super().__init__()
        if config.rate_adaptive and not config.adaptive:
            raise ValueError("student.rate_adaptive=true needs student.adaptive=true: the controller conditions on the SNR")
        self.channel_uses = config.channel_uses
        self.encoder = SemanticEncoder(in_channels, config.width, config.feature_dim)
        self.snr_gate = SNRGate(config.feature_dim) if config.adaptive else None
        self.rate = RateController(config.channel_uses, config.min_channel_uses) if config.rate_adaptive else None
        self.mu = nn.Linear(config.feature_dim, 2 * config.channel_uses)
        self.logvar = nn.Linear(config.feature_dim, 2 * config.channel_uses)
        # Receiver state: each symbol's SNR and whether it was sent (n values each).
        state_dim = 2 * config.channel_uses if config.adaptive else 0
        self.decoder = nn.Sequential(
            nn.Linear(2 * config.channel_uses + state_dim, config.feature_dim),
            nn.ReLU(inplace=True),
        )
        self.classifier = nn.Linear(config.feature_dim, num_classes)
        self.projection = nn.Linear(config.feature_dim, embedding_dim) if embedding_dim else None

    @property
    def adaptive(self) -> bool:
        return self.snr_gate is not None

    def encoder_modules(self) -> list[nn.Module]:
        """What runs on the device before the channel (for size and latency figures)."""
        return [m for m in (self.encoder, self.snr_gate, self.rate, self.mu, self.logvar) if m is not None]

    def symbol_mask(self, snr_db: torch.Tensor) -> torch.Tensor:
        """[B, n] with values in {0, 1}: which complex symbols are sent at each sample's SNR."""
        if self.rate is None:
            return torch.ones(snr_db.shape[0], self.channel_uses, device=snr_db.device)
        return self.rate(snr_db)

    def encode_symbols(self, images: torch.Tensor, snr_db: torch.Tensor | float) -> torch.Tensor:
        """The on-device inference path: images -> [B, n] complex64 symbols, unit average power over
        the sent ones, 0 where not sent (the mean mu is sent; no sampling)."""
        snr_db = _per_sample_snr(snr_db, images)
        return normalize_power(real_to_complex(self.mu(self._features(images, snr_db))), self.symbol_mask(snr_db))

    def forward(self, images: torch.Tensor, snr_db: torch.Tensor | float, channel: Channel) -> StudentOutput:
        """`snr_db` is the link's nominal SNR, what the transmitter knows. Raises ValueError for an
        SNR that is not finite or outside the channels' range."""
        snr_db = _per_sample_snr(snr_db, images)
        features = self._features(images, snr_db)
        mu, logvar = self.mu(features), self.logvar(features).clamp(-_LOGVAR_LIMIT, _LOGVAR_LIMIT)
        # Sampling z ~ q(z|x) while training is what makes the IB rate term meaningful; eval sends mu.
        # Drawn from the CPU's generator whatever the device, as the channel's draws are: one seed
        # gives one run on a GPU and on the CPU (benchmarks/gpu.py); on the CPU this is randn_like.
        z = mu + torch.randn(mu.shape, dtype=mu.dtype).to(mu.device) * torch.exp(0.5 * logvar) if self.training else mu
        mask = self.symbol_mask(snr_db)
        sent_link = channel.transmit(normalize_power(real_to_complex(z), mask), snr_db)
        received_real = complex_to_real(sent_link.received * mask)
        decoder_in = received_real
        if self.adaptive:
            rx_snr = _receiver_snr_db(sent_link.coefficients, snr_db, channel.csi)
            decoder_in = torch.cat([received_real, (rx_snr / _SNR_SCALE_DB) * mask.detach(), mask.detach()], dim=1)
        decoded = self.decoder(decoder_in)
        projected = self.projection(decoded) if self.projection is not None else None
        sent = mask.repeat(1, 2)  # the real view lists real parts, then imaginary parts
        return StudentOutput(self.classifier(decoded), mu * sent, logvar * sent, mask.sum(dim=1), received_real, projected)

    def _features(self, images: torch.Tensor, snr_db: torch.Tensor) -> torch.Tensor:
        features = self.encoder(images)
        return features if self.snr_gate is None else self.snr_gate(features, snr_db)


def _receiver_snr_db(coefficients: torch.Tensor, snr_db: torch.Tensor, csi: str) -> torch.Tensor:
    """[B, n] per-symbol SNR the receiver knows: |h|^2 * SNR under perfect CSI (after zero-forcing
    each symbol's noise is scaled by 1/|h|^2), the nominal SNR without CSI."""
    nominal = snr_db.unsqueeze(1).expand_as(coefficients.real)
    if csi != "perfect":
        return nominal
    gain_db = 10.0 * torch.log10(coefficients.abs().square().clamp_min(1e-12))
    return (nominal + gain_db).clamp_min(_RX_SNR_FLOOR_DB)


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


def build_student(
    in_channels: int, num_classes: int, config: StudentConfig, embedding_dim: int | None = None
) -> StudentCodec:
    """The student for images with `in_channels` channels and `num_classes` classes; with a
    projection head into a teacher embedding of width `embedding_dim` when given."""
    return StudentCodec(in_channels, num_classes, config, embedding_dim)
