"""The channel entry strings of a config: ``channel.clients`` and ``channel.eval_channels``.

A client entry is ``<channel>:<snr>[:k=<K>][:csi=perfect|none]``; an eval entry is the same
without the SNR. Options an entry leaves out take the defaults ``channel.k_factor`` /
``channel.csi``, in training and evaluation alike. Pure Python: config validation parses every
entry, and must not wait for torch.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import TYPE_CHECKING

from fedtosc.channels.profiles import ChannelProfile, EvalLink
from fedtosc.registries import CHANNELS

if TYPE_CHECKING:  # annotations only: the config module (and Hydra) stays out of this one's imports
    from fedtosc.config import ChannelConfig

__all__ = ["client_profiles", "eval_links", "parse_channel_profiles", "parse_eval_link"]

_OPTION_FORMS = "[:k=<K>][:csi=perfect|none][:<parameter>=<value>]"
_PROFILE_FORMS = (
    f"accepted forms: '<channel>:<snr>{_OPTION_FORMS}' with <channel> a registered channel "
    "(fedtosc.registries.CHANNELS) and <snr> one of '10' (fixed), '0~20' (uniform per sample), "
    "'gm(10,3,0.9)' (Gauss-Markov mean,std,rho per round); k only for rician, other parameters as the "
    "channel's registry entry declares them; an option left out "
    "takes channel.k_factor / channel.csi; e.g. 'awgn:0,rayleigh:0~20,rician:10:k=5'"
)
_EVAL_FORMS = (
    f"accepted forms: '<channel>{_OPTION_FORMS}' with <channel> a registered channel, no SNR "
    "(channel.eval_snr_db gives it); k only for rician; an option left out takes channel.k_factor / "
    "channel.csi; e.g. 'awgn', 'rayleigh:csi=none', 'rician:k=5'"
)
_NUMBER = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_UNIFORM_RE = re.compile(rf"^({_NUMBER})~({_NUMBER})$")
_GAUSS_MARKOV_RE = re.compile(rf"^gm\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\)$")
_FIXED_RE = re.compile(rf"^{_NUMBER}$")
# Split on commas that are not inside gm(...).
_ENTRY_SPLIT_RE = re.compile(r",(?![^()]*\))")


def _parse_link(entry: str, channel: str, options: list[str], csi: str, k_factor: float, forms: str) -> EvalLink:
    """The link of one entry: its ``k=``/``csi=`` options over the defaults ``csi``/``k_factor``."""
    if channel not in CHANNELS:
        raise ValueError(f"unknown channel {channel!r} in entry {entry!r}; known: {list(CHANNELS.names())}; {forms}")
    declared = CHANNELS.parameters(channel)
    params: list[tuple[str, float]] = []
    for option in options:
        key, sep, value = option.partition("=")
        if key == "k" and sep and channel == "rician":
            k_factor = _number(value, "k", entry, forms)
        elif key == "csi" and sep:
            csi = value
        elif key in declared and sep:
            params.append((key, declared[key](_number(value, key, entry, forms))))
        else:
            takes = f"; {channel} also takes {sorted(declared)}" if declared else ""
            raise ValueError(f"unexpected option {option!r} in entry {entry!r}{takes}; {forms}")
    try:
        return EvalLink(channel, k_factor, csi, tuple(params))
    except ValueError as error:
        raise ValueError(f"invalid entry {entry!r}: {error}; {forms}") from None


def _number(value: str, key: str, entry: str, forms: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"malformed {key} in entry {entry!r}; {forms}") from None


def _parse_profile_entry(entry: str, seed: int, csi: str, k_factor: float) -> ChannelProfile:
    parts = [part.strip() for part in entry.split(":")]
    if len(parts) < 2:
        raise ValueError(f"malformed channel entry {entry!r}; {_PROFILE_FORMS}")
    snr_text = parts[1].replace(" ", "")
    link = _parse_link(entry, parts[0].lower(), parts[2:], csi, k_factor, _PROFILE_FORMS)
    fields: dict[str, object] = {
        "channel": link.channel, "k_factor": link.k_factor, "csi": link.csi, "params": link.params, "seed": seed,
    }
    if (match := _UNIFORM_RE.match(snr_text)) is not None:
        fields.update(snr="uniform", snr_low_db=float(match[1]), snr_high_db=float(match[2]))
        fields["snr_db"] = (float(match[1]) + float(match[2])) / 2
    elif (match := _GAUSS_MARKOV_RE.match(snr_text)) is not None:
        fields.update(snr="gauss_markov", snr_db=float(match[1]), snr_std_db=float(match[2]), snr_rho=float(match[3]))
    elif _FIXED_RE.match(snr_text) is not None:
        fields.update(snr="fixed", snr_db=float(snr_text))
    else:
        raise ValueError(f"malformed SNR {snr_text!r} in entry {entry!r}; {_PROFILE_FORMS}")
    try:
        return ChannelProfile(**fields)  # type: ignore[arg-type]
    except ValueError as error:
        raise ValueError(f"invalid entry {entry!r}: {error}; {_PROFILE_FORMS}") from None


def parse_channel_profiles(
    spec: str, num_clients: int, seed: int = 0, *, csi: str = "perfect", k_factor: float = 3.0
) -> list[ChannelProfile]:
    """Per-client profiles from one config line, e.g. ``"awgn:0,awgn:5,rayleigh:10,rician:20:k=5"``.

    Give one entry per client, or a single entry for all clients. Client ``i`` gets
    ``seed + i`` for its Gauss-Markov sequence, so clients with the same entry still differ.
    ``csi`` and ``k_factor`` are the defaults for entries without ``:csi=`` / ``:k=`` (a config's
    are ``channel.csi`` / ``channel.k_factor``: use :func:`client_profiles`).
    """
    return list(_parsed_profiles(spec, num_clients, seed, csi, k_factor))


# Every describe and train message asks for its node's profile, and a line of N entries costs O(N)
# to parse (65 ms at 1,000 clients): each process parses a line once. The profiles are frozen, so
# sharing them is safe; a malformed line raises every time (lru_cache keeps no exceptions).
@lru_cache(maxsize=64)
def _parsed_profiles(spec: str, num_clients: int, seed: int, csi: str, k_factor: float) -> tuple[ChannelProfile, ...]:
    if num_clients < 1:
        raise ValueError(f"num_clients must be >= 1, got {num_clients}")
    entries = [entry.strip() for entry in _ENTRY_SPLIT_RE.split(spec.strip())]
    if any(not entry for entry in entries):
        raise ValueError(f"empty channel entry in {spec!r}; {_PROFILE_FORMS}")
    if len(entries) == 1:
        entries = entries * num_clients
    elif len(entries) != num_clients:
        raise ValueError(
            f"channel spec {spec!r} has {len(entries)} entries but there are {num_clients} clients; "
            f"give 1 entry or {num_clients}; {_PROFILE_FORMS}"
        )
    return tuple(_parse_profile_entry(entry, seed + index, csi, k_factor) for index, entry in enumerate(entries))


def parse_eval_link(entry: str, *, csi: str = "perfect", k_factor: float = 3.0) -> EvalLink:
    """One ``channel.eval_channels`` entry, e.g. ``"awgn"``, ``"rayleigh:csi=none"``, ``"rician:k=5"``.

    The options are those of a client entry, without its SNR part; ``csi`` and ``k_factor`` are the
    defaults for an entry that does not set them. A malformed entry raises ``ValueError`` naming
    it and listing the accepted forms.
    """
    channel, *options = [part.strip() for part in entry.split(":")]
    return _parse_link(entry, channel.lower(), options, csi, k_factor, _EVAL_FORMS)


def client_profiles(config: ChannelConfig, num_clients: int, seed: int = 0, spec: str | None = None) -> list[ChannelProfile]:
    """The clients' profiles from ``config.clients`` (or ``spec``, e.g. a node's own ``channel=``
    entry), with ``config.csi`` / ``config.k_factor`` as the defaults entries may override."""
    line = config.clients if spec is None else spec
    return parse_channel_profiles(line, num_clients, seed, csi=config.csi, k_factor=config.k_factor)


def eval_links(config: ChannelConfig, num_clients: int) -> list[EvalLink]:
    """The links the final SNR sweep evaluates, in order, each with a distinct label.

    ``config.eval_channels`` as given (entries parsed by :func:`parse_eval_link`), or, when it is
    ``None``, the training links: the distinct links of the clients, in client order, so every
    client's channel is evaluated with the K and CSI it trained with. Two links with the same
    :meth:`EvalLink.describe` label behave the same; a list that names one twice raises ``ValueError``.
    """
    if config.eval_channels is None:
        links: dict[str, EvalLink] = {}
        for profile in client_profiles(config, num_clients):
            links.setdefault(profile.link().describe(), profile.link())
        return list(links.values())
    parsed = [parse_eval_link(entry, csi=config.csi, k_factor=config.k_factor) for entry in config.eval_channels]
    labels = [link.describe() for link in parsed]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"eval channels {list(config.eval_channels)} name the same link more than once: {repeated}")
    return parsed
