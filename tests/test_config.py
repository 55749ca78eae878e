"""The config schema stops bad input before any work, naming the key."""

import pytest

from fedtosc.cli import main
from fedtosc.config import ConfigError, config_from_json, config_to_json, load_config


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
    ],
)
def test_out_of_range_values_are_named(override, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_config([override])


def test_client_channel_line_must_match_client_count():
    with pytest.raises(ConfigError, match="channel.clients"):
        load_config(["channel.clients='awgn:0,awgn:5,awgn:10'", "federation.num_clients=4"])


def test_config_survives_the_json_round_trip_the_server_sends():
    config = load_config(["federation.rounds=7", "method=no_ib"])
    assert config_from_json(config_to_json(config)) == config


def test_cli_reports_bad_key_and_exits_before_work(tmp_path, capsys):
    code = main(["run", "federation.rounds=abc", f"output_dir={tmp_path / 'run'}"])
    assert code == 2
    assert "federation.rounds" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_output_dir_with_a_colon_is_refused_before_any_work(tmp_path, capsys):
    assert main(["run", f"output_dir={tmp_path}/a:b"]) == 2
    assert "contains ':'" in capsys.readouterr().err
    assert not (tmp_path / "a:b").exists()
