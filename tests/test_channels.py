"""Properties of the differentiable channels and SNR profiles in fedtosc.channels."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from fedtosc.channels import (
    SNR_DB_LIMITS,
    AWGNChannel,
    ChannelProfile,
    EvalLink,
    FixedDrawWidth,
    RayleighChannel,
    RicianChannel,
    build_channel,
    client_profiles,
    complex_to_real,
    eval_links,
    normalize_power,
    parse_channel_profiles,
    parse_eval_link,
    real_to_complex,
    seed_channels,
    validate_snr_db,
)
from fedtosc.registries import CHANNELS
from fedtosc.config import ChannelConfig
from fedtosc.data.datasets import ImageDataset
from fedtosc.evaluation import snr_sweep

BATCH, CHANNEL_USES = 256, 128
FADING_CHANNELS = [
    pytest.param(lambda csi: RayleighChannel(csi=csi, block_length=1), id="rayleigh"),
    pytest.param(lambda csi: RicianChannel(k_factor=3.0, csi=csi, block_length=1), id="rician"),
]
ALL_CHANNELS = [
    pytest.param("awgn", "perfect", id="awgn"),
    pytest.param("rayleigh", "perfect", id="rayleigh-perfect"),
    pytest.param("rayleigh", "none", id="rayleigh-none"),
    pytest.param("rician", "perfect", id="rician-perfect"),
    pytest.param("rician", "none", id="rician-none"),
]


def _unit_power_symbols(seed: int, batch: int = BATCH, channel_uses: int = CHANNEL_USES) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return normalize_power(torch.randn(batch, channel_uses, dtype=torch.complex64, generator=generator))


def _power(z: torch.Tensor) -> torch.Tensor:
    return z.real.square() + z.imag.square()


# ---------------------------------------------------------------- measured SNR


@settings(max_examples=15, deadline=None)
@given(snr_db=st.floats(-10.0, 30.0), seed=st.integers(0, 2**16))
def test_awgn_measured_snr_matches_requested(snr_db: float, seed: int) -> None:
    seed_channels(seed)
    x = _unit_power_symbols(seed)
    y = AWGNChannel()(x, torch.tensor(snr_db))
    measured_snr_db = 10 * math.log10(_power(x).mean().item() / _power(y - x).mean().item())
    # 32768 noise samples: the estimate's std is ~0.025 dB.
    assert measured_snr_db == pytest.approx(snr_db, abs=0.15)


@pytest.mark.parametrize("make_channel", FADING_CHANNELS)
@settings(max_examples=8, deadline=None)
@given(snr_db=st.floats(-10.0, 30.0), seed=st.integers(0, 2**16))
def test_fading_measured_snr_without_csi_matches_requested(make_channel, snr_db: float, seed: int) -> None:
    seed_channels(seed)
    x = _unit_power_symbols(seed)
    out = make_channel("none").transmit(x, snr_db)
    faded = out.coefficients * x
    # Per-symbol fading (block_length=1) gives 32768 draws, so E|h x|^2 is ~1 to within 1%.
    measured_snr_db = 10 * math.log10(_power(faded).mean().item() / _power(out.received - faded).mean().item())
    assert measured_snr_db == pytest.approx(snr_db, abs=0.25)


@pytest.mark.parametrize("make_channel", FADING_CHANNELS)
@settings(max_examples=8, deadline=None)
@given(snr_db=st.floats(-10.0, 30.0), seed=st.integers(0, 2**16))
def test_fading_with_perfect_csi_adds_requested_noise_before_equalization(
    make_channel, snr_db: float, seed: int
) -> None:
    seed_channels(seed)
    x = _unit_power_symbols(seed)
    out = make_channel("perfect").transmit(x, snr_db)
    # Undo the zero-forcing to get y = h x + n back, then measure n.
    unequalized = out.received * out.coefficients
    noise_power = _power(unequalized - out.coefficients * x).mean().item()
    assert 10 * math.log10(1.0 / noise_power) == pytest.approx(snr_db, abs=0.15)
    assert torch.allclose(out.noise_power, torch.full((BATCH, 1), 10 ** (-snr_db / 10)))


def test_perfect_csi_equalization_recovers_input_at_high_snr() -> None:
    seed_channels(3)
    x = _unit_power_symbols(3)
    for channel in (RayleighChannel(csi="perfect"), RicianChannel(csi="perfect")):
        y = channel(x, 50.0)
        # Block fading per sample: deep fades amplify noise, so compare the median error.
        assert _power(y - x).median().item() < 1e-3


def test_per_sample_snr_makes_high_snr_samples_less_noisy() -> None:
    seed_channels(4)
    x = _unit_power_symbols(4)
    snr_db = torch.cat([torch.full((BATCH // 2,), 30.0), torch.full((BATCH // 2,), 0.0)])
    for name in CHANNELS.names():
        out = build_channel(name, csi="none", block_length=1).transmit(x, snr_db)
        noise_per_sample = _power(out.received - out.coefficients * x).mean(dim=1)
        high, low = noise_per_sample[: BATCH // 2], noise_per_sample[BATCH // 2 :]
        assert high.max() < low.min(), name
        assert high.mean().item() == pytest.approx(1e-3, rel=0.05)
        assert low.mean().item() == pytest.approx(1.0, rel=0.05)


# ---------------------------------------------------------------- power normalization


@settings(max_examples=30, deadline=None)
@given(
    batch=st.integers(1, 16),
    channel_uses=st.integers(1, 64),
    log_scale=st.floats(-4.0, 4.0),
    seed=st.integers(0, 2**16),
)
def test_normalize_power_gives_unit_average_power_per_sample(
    batch: int, channel_uses: int, log_scale: float, seed: int
) -> None:
    generator = torch.Generator().manual_seed(seed)
    scales = 10 ** (log_scale * torch.rand(batch, 1, generator=generator))
    z = scales * torch.randn(batch, channel_uses, dtype=torch.complex64, generator=generator)
    power = _power(normalize_power(z)).mean(dim=1)
    # Unit power, up to the 1e-12 guard against all-zero samples (visible only on near-zero inputs).
    raw_power = _power(z).mean(dim=1)
    assert torch.allclose(power, raw_power / (raw_power + 1e-12), rtol=1e-4, atol=0)


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 16), channel_uses=st.integers(1, 64), seed=st.integers(0, 2**16))
def test_normalize_power_with_mask_averages_over_active_symbols_only(batch: int, channel_uses: int, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    z = 5 * torch.randn(batch, channel_uses, dtype=torch.complex64, generator=generator)
    mask = (torch.rand(batch, channel_uses, generator=generator) < 0.5).float()
    mask[:, 0] = 1.0  # at least one active symbol per sample
    normalized = normalize_power(z, mask)
    assert torch.all(normalized[mask == 0] == 0)
    active_power = (_power(normalized) * mask).sum(dim=1) / mask.sum(dim=1)
    assert torch.allclose(active_power, torch.ones(batch), atol=1e-4)


def test_normalize_power_is_finite_for_silent_or_fully_masked_samples() -> None:
    z = torch.zeros(2, 8, dtype=torch.complex64)
    assert torch.isfinite(torch.view_as_real(normalize_power(z))).all()
    masked = normalize_power(torch.ones(2, 8, dtype=torch.complex64), torch.zeros(2, 8))
    assert torch.all(masked == 0)


# ---------------------------------------------------------------- fading statistics


def test_rayleigh_gain_has_unit_mean_and_exponential_distribution() -> None:
    seed_channels(5)
    out = RayleighChannel(block_length=1).transmit(_unit_power_symbols(5), 20.0)
    gain = _power(out.coefficients)
    assert gain.mean().item() == pytest.approx(1.0, abs=0.03)
    # |h|^2 ~ Exp(1): P(|h|^2 < 0.1) = 1 - exp(-0.1).
    assert (gain < 0.1).float().mean().item() == pytest.approx(1 - math.exp(-0.1), abs=0.01)


@pytest.mark.parametrize("k_factor", [0.0, 1.0, 3.0, 10.0])
def test_rician_gain_has_unit_mean_and_los_mean(k_factor: float) -> None:
    seed_channels(6)
    out = RicianChannel(k_factor=k_factor, block_length=1).transmit(_unit_power_symbols(6), 20.0)
    assert _power(out.coefficients).mean().item() == pytest.approx(1.0, abs=0.03)
    # The mean of h is the LOS amplitude sqrt(K/(K+1)) with phase 0.
    assert out.coefficients.mean().real.item() == pytest.approx(math.sqrt(k_factor / (k_factor + 1)), abs=0.02)


def test_block_length_holds_fading_constant_within_each_block() -> None:
    seed_channels(7)
    x = _unit_power_symbols(7, batch=4, channel_uses=10)
    coefficients = RayleighChannel(block_length=4).transmit(x, 10.0).coefficients
    blocks = [coefficients[:, 0:4], coefficients[:, 4:8], coefficients[:, 8:10]]
    for block in blocks:
        assert torch.all(block == block[:, :1])
    assert not torch.all(coefficients[:, 0] == coefficients[:, 4])
    whole_sample = RayleighChannel(block_length=None).transmit(x, 10.0).coefficients
    assert torch.all(whole_sample == whole_sample[:, :1])


# ---------------------------------------------------------------- gradients and seeds


@pytest.mark.parametrize(("name", "csi"), ALL_CHANNELS)
def test_gradients_reach_the_input_through_every_channel(name: str, csi: str) -> None:
    seed_channels(8)
    features = torch.randn(8, 32, requires_grad=True)
    y = build_channel(name, csi=csi)(normalize_power(real_to_complex(features)), torch.full((8,), 10.0))
    loss = complex_to_real(y).square().mean()
    loss.backward()
    assert features.grad is not None
    assert torch.isfinite(features.grad).all()
    assert features.grad.abs().sum() > 0


@pytest.mark.parametrize(("name", "csi"), ALL_CHANNELS)
def test_same_seed_gives_identical_outputs_and_different_seed_differs(name: str, csi: str) -> None:
    x = _unit_power_symbols(9, batch=4, channel_uses=16)
    channel = build_channel(name, csi=csi)
    seed_channels(11)
    first = channel(x, 5.0)
    seed_channels(11)
    again = channel(x, 5.0)
    seed_channels(12)
    other = channel(x, 5.0)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_seed_channels_leaves_torch_global_generator_alone() -> None:
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    seed_channels(123)
    assert torch.equal(torch.rand(3), expected)


# ---------------------------------------------------------------- validation errors


@settings(max_examples=30, deadline=None)
@given(snr_db=st.floats(SNR_DB_LIMITS[0], SNR_DB_LIMITS[1]))
def test_validate_snr_db_accepts_in_range_values_as_float32(snr_db: float) -> None:
    snr = validate_snr_db(snr_db)
    assert snr.dtype == torch.float32
    assert snr.item() == pytest.approx(snr_db, abs=1e-4)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf"), 50.5, -31.0, 1e6])
def test_validate_snr_db_rejects_non_finite_or_out_of_range_naming_the_value(bad: float) -> None:
    with pytest.raises(ValueError, match=r"allowed range is \[-30, 50\] dB") as error:
        validate_snr_db(torch.tensor([10.0, bad, 0.0]))
    assert str(bad if not math.isfinite(bad) else f"{bad:g}") in str(error.value)


def test_validate_snr_db_honours_custom_limits() -> None:
    with pytest.raises(ValueError, match=r"\[0, 10\]"):
        validate_snr_db(11.0, low=0.0, high=10.0)


@pytest.mark.parametrize(("name", "csi"), ALL_CHANNELS)
def test_channel_rejects_bad_snr_and_bad_shapes(name: str, csi: str) -> None:
    channel = build_channel(name, csi=csi)
    x = _unit_power_symbols(0, batch=4, channel_uses=8)
    with pytest.raises(ValueError, match="finite"):
        channel(x, torch.tensor([1.0, float("nan"), 2.0, 3.0]))
    with pytest.raises(ValueError, match="out of range"):
        channel(x, 80.0)
    with pytest.raises(ValueError, match=r"shape \[4\]"):
        channel(x, torch.zeros(3))
    with pytest.raises(TypeError, match="complex"):
        channel(complex_to_real(x), 10.0)


def test_build_channel_rejects_unknown_name_listing_known_ones() -> None:
    with pytest.raises(ValueError, match=r"'awgn', 'rayleigh', 'rician'"):
        build_channel("nakagami")


def test_build_channel_rejects_unknown_csi_listing_modes() -> None:
    with pytest.raises(ValueError, match=r"'none', 'perfect'"):
        build_channel("rayleigh", csi="estimated")


def test_rician_rejects_negative_k_factor() -> None:
    with pytest.raises(ValueError, match="k_factor"):
        RicianChannel(k_factor=-0.5)
    with pytest.raises(ValueError, match="k_factor"):
        build_channel("rician", k_factor=-1.0)


# ---------------------------------------------------------------- packing


@settings(max_examples=30, deadline=None)
@given(batch=st.integers(1, 8), half_width=st.integers(1, 32), seed=st.integers(0, 2**16))
def test_real_complex_packing_round_trips(batch: int, half_width: int, seed: int) -> None:
    x = torch.randn(batch, 2 * half_width, generator=torch.Generator().manual_seed(seed))
    z = real_to_complex(x)
    assert z.shape == (batch, half_width) and z.dtype == torch.complex64
    assert torch.equal(complex_to_real(z), x)


def test_real_to_complex_uses_first_half_real_second_half_imag() -> None:
    z = real_to_complex(torch.tensor([[1.0, 2.0, 3.0, 4.0]]))
    assert torch.equal(z, torch.tensor([[1 + 3j, 2 + 4j]], dtype=torch.complex64))
    with pytest.raises(ValueError, match="even"):
        real_to_complex(torch.zeros(2, 3))


# ---------------------------------------------------------------- SNR profiles


def test_parse_channel_profiles_accepts_every_entry_form() -> None:
    profiles = parse_channel_profiles("awgn:10, rayleigh:0~20, awgn:gm(10,3,0.9), rician:20:k=5:csi=none", 4)
    fixed, uniform, gauss_markov, rician = profiles
    assert (fixed.channel, fixed.snr, fixed.snr_db) == ("awgn", "fixed", 10.0)
    assert (uniform.channel, uniform.snr, uniform.snr_low_db, uniform.snr_high_db) == ("rayleigh", "uniform", 0.0, 20.0)
    assert (gauss_markov.snr, gauss_markov.snr_db, gauss_markov.snr_std_db, gauss_markov.snr_rho) == (
        "gauss_markov", 10.0, 3.0, 0.9,
    )
    assert (rician.channel, rician.k_factor, rician.csi) == ("rician", 5.0, "none")
    assert [profile.describe() for profile in profiles] == [
        "awgn@10dB",
        "rayleigh@uniform(0,20)dB",
        "awgn@gm(10,3,0.9)dB",
        "rician(k=5)[csi=none]@20dB",
    ]
    assert isinstance(rician.make_channel(), RicianChannel)


def test_parse_channel_profiles_repeats_a_single_entry_for_all_clients() -> None:
    profiles = parse_channel_profiles("rayleigh:-5~15", 5)
    assert len(profiles) == 5
    assert {profile.describe() for profile in profiles} == {"rayleigh@uniform(-5,15)dB"}
    # Each client gets its own Gauss-Markov seed, so identical entries still evolve differently.
    assert len({profile.seed for profile in profiles}) == 5


def test_parse_channel_profiles_rejects_wrong_entry_count() -> None:
    with pytest.raises(ValueError, match="2 entries but there are 3 clients"):
        parse_channel_profiles("awgn:0,awgn:5", 3)


@pytest.mark.parametrize(
    "entry",
    ["fading:10", "awgn", "awgn:ten", "awgn:10~", "awgn:gm(10,3)", "awgn:99", "rayleigh:20~0", "awgn:5:k=2",
     "rician:5:k=-1", "rician:5:csi=partial", "awgn:gm(10,3,1.5)"],
)
def test_parse_channel_profiles_rejects_bad_entries_naming_them_and_the_forms(entry: str) -> None:
    with pytest.raises(ValueError, match="accepted forms") as error:
        parse_channel_profiles(entry, 1)
    assert repr(entry) in str(error.value)


def test_client_entries_without_csi_or_k_take_the_defaults_and_entries_that_say_win() -> None:
    spec = "rician:10, rician:10:k=5, rayleigh:0~20:csi=perfect, rayleigh:5"
    silent_k, own_k, own_csi, silent_csi = parse_channel_profiles(spec, 4, csi="none", k_factor=2.0)
    assert (silent_k.k_factor, silent_k.csi) == (2.0, "none")
    assert (own_k.k_factor, own_k.csi) == (5.0, "none")
    assert (own_csi.csi, silent_csi.csi) == ("perfect", "none")
    # Without defaults given, a silent entry is perfect CSI and K=3, as before.
    assert parse_channel_profiles("rician:10", 1)[0].link() == EvalLink("rician", 3.0, "perfect")


def test_client_profiles_apply_the_config_defaults_to_the_clients_line_or_a_node_entry() -> None:
    config = ChannelConfig(clients="rician:10,rician:0:k=9", csi="none", k_factor=6.0)
    assert [p.describe() for p in client_profiles(config, 2)] == ["rician(k=6)[csi=none]@10dB", "rician(k=9)[csi=none]@0dB"]
    [node] = client_profiles(config, 1, seed=7, spec="rayleigh:5")
    assert (node.describe(), node.seed) == ("rayleigh[csi=none]@5dB", 7)


@pytest.mark.parametrize(
    ("entry", "link"),
    [
        ("awgn", EvalLink("awgn", 4.0, "perfect")),
        ("Rayleigh", EvalLink("rayleigh", 4.0, "perfect")),
        ("rayleigh:csi=none", EvalLink("rayleigh", 4.0, "none")),
        ("rician", EvalLink("rician", 4.0, "perfect")),
        ("rician:k=3:csi=none", EvalLink("rician", 3.0, "none")),
        (" rician : csi=none : k=0.5 ", EvalLink("rician", 0.5, "none")),
    ],
)
def test_parse_eval_link_reads_client_entry_options_over_the_defaults(entry: str, link: EvalLink) -> None:
    assert parse_eval_link(entry, csi="perfect", k_factor=4.0) == link


@pytest.mark.parametrize(
    "entry", ["fading", "", "rician:10", "awgn:k=3", "rician:k=x", "rician:k=-1", "rayleigh:csi=partial", "rician:q=1"]
)
def test_parse_eval_link_rejects_malformed_entries_naming_them_and_the_forms(entry: str) -> None:
    with pytest.raises(ValueError, match="accepted forms: '<channel>\\[:k=<K>\\]") as error:
        parse_eval_link(entry)
    assert repr(entry) in str(error.value)
    assert "no SNR" in str(error.value)


def test_eval_link_labels_show_only_what_changes_the_channel() -> None:
    labels = [
        EvalLink("awgn", 9.0, "none").describe(),  # AWGN: no fading, so neither K nor CSI matters
        EvalLink("rayleigh", 9.0, "perfect").describe(),
        EvalLink("rayleigh", 9.0, "none").describe(),
        EvalLink("rician", 5.0, "perfect").describe(),
        EvalLink("rician", 0.5, "none").describe(),
    ]
    assert labels == ["awgn", "rayleigh", "rayleigh[csi=none]", "rician(k=5)", "rician(k=0.5)[csi=none]"]
    channel = EvalLink("rician", 5.0, "none").make_channel(block_length=2)
    assert isinstance(channel, RicianChannel) and (channel.k_factor, channel.csi, channel.block_length) == (5.0, "none", 2)


def test_eval_links_by_default_are_the_distinct_training_links_in_client_order() -> None:
    config = ChannelConfig(clients="rician:10:k=5,awgn:0,rayleigh:0~20:csi=none,awgn:20,rician:0:k=5,rician:5")
    assert config.eval_channels is None
    links = eval_links(config, 6)
    assert [link.describe() for link in links] == ["rician(k=5)", "awgn", "rayleigh[csi=none]", "rician(k=3)"]
    assert links[0] == EvalLink("rician", 5.0, "perfect")


def test_eval_links_from_a_list_take_the_config_defaults_and_refuse_a_repeated_link() -> None:
    config = ChannelConfig(eval_channels=["awgn", "rician", "rayleigh:csi=perfect"], csi="none", k_factor=7.0)
    assert [link.describe() for link in eval_links(config, 4)] == ["awgn", "rician(k=7)[csi=none]", "rayleigh"]
    repeated = ChannelConfig(eval_channels=["rician:k=3", "rician"])
    with pytest.raises(ValueError, match=r"more than once: \['rician\(k=3\)'\]"):
        eval_links(repeated, 4)


class _ChannelRecorder(torch.nn.Module):
    """Stands in for a student: answers class 0 and notes the channel of every batch."""

    def __init__(self) -> None:
        super().__init__()
        self.channels: list[torch.nn.Module] = []

    def forward(self, images: torch.Tensor, snr_db: torch.Tensor, channel: torch.nn.Module) -> SimpleNamespace:
        self.channels.append(channel)
        batch = images.shape[0]
        return SimpleNamespace(logits=torch.eye(2)[[0] * batch], channel_uses=torch.full((batch,), 4.0))


def test_snr_sweep_keys_curves_by_link_label_and_evaluates_each_link_as_configured() -> None:
    data = ImageDataset(torch.zeros(4, 1, 2, 2, dtype=torch.uint8), torch.tensor([0, 0, 1, 1]), ("a", "b"))
    links = [EvalLink("awgn"), EvalLink("rician", 5.0, "none"), EvalLink("rayleigh", csi="none")]
    student = _ChannelRecorder()
    config = ChannelConfig(eval_snr_db=[0.0, 10.0], block_length=3)
    sweep = snr_sweep(student, data, links, config, batch_size=4, device=torch.device("cpu"), seed=0)  # type: ignore[arg-type]
    assert sweep.accuracy == {label: {"0.0": 0.5, "10.0": 0.5} for label in ("awgn", "rician(k=5)[csi=none]", "rayleigh[csi=none]")}
    assert sweep.channel_uses == {"0.0": 4.0, "10.0": 4.0}
    assert sweep.correct["rayleigh[csi=none]@10.0"].tolist() == [True, True, False, False]  # it answers class 0
    assert len(sweep.correct) == 3 * 2
    # one batch per (link, SNR), each channel drawn at the evaluation's fixed width
    awgn, _, rician, _, rayleigh, _ = (padded.channel for padded in student.channels)
    assert isinstance(awgn, AWGNChannel)
    assert isinstance(rician, RicianChannel) and (rician.k_factor, rician.csi, rician.block_length) == (5.0, "none", 3)
    assert isinstance(rayleigh, RayleighChannel) and rayleigh.csi == "none"


@settings(max_examples=20, deadline=None)
@given(low=st.floats(-30.0, 50.0), width=st.floats(0.0, 30.0), seed=st.integers(0, 2**16))
def test_uniform_profile_samples_per_sample_snr_within_range(low: float, width: float, seed: int) -> None:
    high = min(low + width, SNR_DB_LIMITS[1])
    profile = ChannelProfile(channel="awgn", snr="uniform", snr_db=low, snr_low_db=low, snr_high_db=high)
    snr = profile.sample_snr_db(64, 1, torch.Generator().manual_seed(seed))
    assert snr.shape == (64,) and snr.dtype == torch.float32
    assert torch.all((snr >= low - 1e-4) & (snr <= high + 1e-4))
    again = profile.sample_snr_db(64, 1, torch.Generator().manual_seed(seed))
    assert torch.equal(snr, again)


def test_fixed_profile_samples_constant_snr() -> None:
    profile = parse_channel_profiles("awgn:7.5", 1)[0]
    assert torch.equal(profile.sample_snr_db(4, 3, torch.Generator()), torch.full((4,), 7.5))


def test_gauss_markov_sequence_is_deterministic_per_seed_and_round() -> None:
    profile = ChannelProfile(channel="awgn", snr="gauss_markov", snr_db=10.0, snr_std_db=3.0, snr_rho=0.9, seed=4)
    sequence = [profile.gauss_markov_snr_db(r) for r in range(30)]
    assert sequence[0] == 10.0
    assert sequence == [profile.gauss_markov_snr_db(r) for r in range(30)]
    other_seed = ChannelProfile(channel="awgn", snr="gauss_markov", snr_db=10.0, seed=5)
    assert sequence != [other_seed.gauss_markov_snr_db(r) for r in range(30)]
    # The caller's generator does not change a round's SNR, and one round shares one SNR.
    snr = profile.sample_snr_db(6, 12, torch.Generator().manual_seed(99))
    assert torch.allclose(snr, torch.full((6,), sequence[12]))
    assert torch.equal(snr, profile.sample_snr_db(6, 12, torch.Generator().manual_seed(1)))


@settings(max_examples=10, deadline=None)
@given(
    mean=st.floats(-30.0, 50.0),
    std=st.floats(0.0, 40.0),
    rho=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_gauss_markov_sequence_stays_within_snr_limits(mean: float, std: float, rho: float, seed: int) -> None:
    profile = ChannelProfile(channel="rayleigh", snr="gauss_markov", snr_db=mean, snr_std_db=std, snr_rho=rho, seed=seed)
    final = profile.gauss_markov_snr_db(200)
    path = [profile.gauss_markov_snr_db(r) for r in range(0, 200, 20)] + [final]
    assert all(SNR_DB_LIMITS[0] <= value <= SNR_DB_LIMITS[1] for value in path)


def test_gauss_markov_sequence_keeps_its_stationary_spread() -> None:
    profile = ChannelProfile(channel="awgn", snr="gauss_markov", snr_db=10.0, snr_std_db=2.0, snr_rho=0.5, seed=0)
    values = torch.tensor([profile.gauss_markov_snr_db(r) for r in range(1, 400)])
    assert values.mean().item() == pytest.approx(10.0, abs=0.5)
    assert values.std().item() == pytest.approx(2.0, rel=0.2)
    assert (values - 10.0).abs().max().item() < 6 * 2.0


@pytest.mark.parametrize("entry", ["awgn", "rayleigh:csi=none", "rician:k=5"])
def test_fixed_draw_width_gives_narrow_and_wide_students_the_same_draws_on_shared_symbols(entry: str) -> None:
    channel = parse_eval_link(entry).make_channel(block_length=3)
    wide = normalize_power(torch.complex(torch.randn(8, 16), torch.randn(8, 16)))
    sent = {}
    for width in (5, 16):  # e.g. a fixed-rate student of 5 symbols and one of 16
        seed_channels(7)
        sent[width] = FixedDrawWidth(channel, 64).transmit(wide[:, :width], 0.0)
    assert torch.equal(sent[5].coefficients, sent[16].coefficients[:, :5])
    assert torch.equal(sent[5].received, sent[16].received[:, :5])
    seed_channels(7)
    unpadded = channel.transmit(wide[:, :5], 0.0)
    assert not torch.equal(unpadded.received, sent[5].received)  # without it, the draws depend on the width


def test_fixed_draw_width_refuses_a_wider_sample() -> None:
    with pytest.raises(ValueError, match="exceed draw_width=4"):
        FixedDrawWidth(AWGNChannel(), 4).transmit(torch.ones(2, 5, dtype=torch.complex64), 10.0)
