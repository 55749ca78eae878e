"""The config schema stops bad input before any work, naming the key."""

import pytest

from fedtosc.channels import EvalLink, eval_links
from fedtosc.cli import main
from fedtosc.config import ConfigError, config_from_json, config_to_json, load_config
from fedtosc.federation.node import client_profile


def test_defaults_compose_and_validate():
    config = load_config()
    assert config.dataset.name == "digits"
    assert config.federation.num_clients == len(config.channel.clients.split(","))


def test_unknown_key_is_named():
    with pytest.raises(ConfigError, match="federation.no_such_key|no_such_key"):
        load_config(["+federation.no_such_key=1"])
    with pytest.raises(ConfigError, match="rounds_typo"):
        load_config(["federation.rounds_typo=3"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match="federation.rounds"):
        load_config(["federation.rounds=three"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("federation.rounds=-1", "federation.rounds"),
        ("federation.num_clients=0", "federation.num_clients"),
        ("dataset.label_fraction=1.5", "dataset.label_fraction"),
        ("strategy.name=fedsgd", "strategy.name"),
        ("channel.eval_snr_db=[-5,nan]", "channel.eval_snr_db"),
        ("channel.eval_snr_db=[100]", "channel.eval_snr_db"),
        ("channel.k_factor=-1", "channel.k_factor"),
        ("channel.k_factor=inf", "channel.k_factor"),
        ("channel.csi=partial", "channel.csi"),
        ("loss.rate_weight=-0.1", "loss.rate_weight"),
        ("knowledge.views=0", "knowledge.views"),
        ("student.min_channel_uses=32", "student.min_channel_uses"),
    ],
)
def test_out_of_range_values_are_named(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config([override])


def test_a_rate_controller_without_snr_conditioning_is_refused():
    with pytest.raises(ConfigError, match=r"student\.rate_adaptive=true needs student\.adaptive=true"):
        load_config(["method=no_adaptive", "student.rate_adaptive=true"])


def test_client_channel_line_must_match_client_count():
    with pytest.raises(ConfigError, match="channel.clients"):
        load_config(["channel.clients='awgn:0,awgn:5,awgn:10'", "federation.num_clients=4"])


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ("channel.eval_channels=[awgn,fading]", "'fading'"),
        ("channel.eval_channels=['rician:10']", "'rician:10'"),
        ("channel.eval_channels=['awgn:k=3']", "'awgn:k=3'"),
        ("channel.eval_channels=[rayleigh,'rayleigh:csi=perfect']", "more than once"),
    ],
)
def test_bad_eval_channel_entries_are_named_with_the_accepted_forms(override, named):
    with pytest.raises(ConfigError, match=r"channel\.eval_channels") as error:
        load_config([override])
    assert named in str(error.value)
    if named != "more than once":
        assert "accepted forms" in str(error.value)


def test_the_awgn_job_evaluates_on_awgn_and_rayleigh_as_it_names_them():
    config = load_config()
    assert config.channel.eval_channels == ["awgn", "rayleigh"]
    assert [link.describe() for link in eval_links(config.channel, config.federation.num_clients)] == ["awgn", "rayleigh"]


def test_heterogeneous_fading_evaluates_each_training_link_with_the_k_and_csi_it_trained_with():
    config = load_config(["channel=heterogeneous_fading"])
    assert config.channel.eval_channels is None
    links = eval_links(config.channel, config.federation.num_clients)
    assert [link.describe() for link in links] == ["awgn", "rayleigh", "rician(k=5)"]
    rician = client_profile(config, 2)
    assert rician.link() == links[2] == EvalLink("rician", 5.0, "perfect")


def test_global_csi_and_k_are_defaults_that_client_entries_override_in_training_and_evaluation():
    config = load_config([
        "channel.clients='rician:10:k=5:csi=perfect,rician:10,rayleigh:5'", "federation.num_clients=3",
        "channel.csi=none", "channel.k_factor=2", "channel.eval_channels=null",
    ])
    trained = [client_profile(config, partition).describe() for partition in range(3)]
    assert trained == ["rician(k=5)@10dB", "rician(k=2)[csi=none]@10dB", "rayleigh[csi=none]@5dB"]
    evaluated = [link.describe() for link in eval_links(config.channel, 3)]
    assert evaluated == ["rician(k=5)", "rician(k=2)[csi=none]", "rayleigh[csi=none]"]
    # A node's own `channel=` entry takes the same defaults.
    assert client_profile(config, 0, override="rician:0").describe() == "rician(k=2)[csi=none]@0dB"


def test_config_survives_the_json_round_trip_the_server_sends():
    config = load_config(["federation.rounds=7", "method=no_ib"])
    assert config_from_json(config_to_json(config)) == config
    fading = load_config(["channel=heterogeneous_fading", "channel.k_factor=4"])  # eval_channels null survives too
    assert config_from_json(config_to_json(fading)) == fading


def test_cli_reports_bad_key_and_exits_before_work(tmp_path, capsys):
    code = main(["run", "federation.rounds=abc", f"output_dir={tmp_path / 'run'}"])
    assert code == 2
    assert "federation.rounds" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_output_dir_with_a_colon_is_refused_before_any_work(tmp_path, capsys):
    assert main(["run", f"output_dir={tmp_path}/a:b"]) == 2
    assert "contains ':'" in capsys.readouterr().err
    assert not (tmp_path / "a:b").exists()
