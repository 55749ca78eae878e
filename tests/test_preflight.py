"""Everything knowable is checked before any work, fast, and reported as one line naming the key."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from fedtosc.channels import SNR_DB_LIMITS
from fedtosc.cli import main
from fedtosc.config import ConfigError, load_config
from fedtosc.preflight import check_before_work, check_writable, load_checked_config

_ROOT = Path(__file__).resolve().parents[1]
_HEAVY = ("torch", "sionna", "flwr", "ray", "open_clip", "matplotlib", "sklearn")


def _fedtosc(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(_ROOT)}
    return subprocess.run([sys.executable, "-m", "fedtosc.cli", *args], capture_output=True, text=True, cwd=cwd, env=env, check=False)


def _image_folder(root: Path, classes: int) -> Path:
    for split in ("train", "test"):
        for index in range(classes):
            (root / split / f"class{index}").mkdir(parents=True)
    return root


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        (["dataset=cifar10_folder", "dataset.root=/nonexistent"], "dataset.root=/nonexistent does not exist"),
        (["dataset.name=cifar10", "dataset.root=/nonexistent"], "dataset.download=true"),
        (["knowledge.k=50"], "knowledge.k=50 exceeds the 10 classes of dataset.name=digits"),
        (["teacher=clip", "teacher.checkpoint=/nonexistent.safetensors"], "teacher.checkpoint=/nonexistent.safetensors is not a file"),
        (["teacher.class_names=[a,b]"], "teacher.class_names has 2 names"),
    ],
)
def test_what_would_fail_after_training_is_named_before_any_work(overrides: list[str], named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_checked_config(overrides)


def test_an_image_folder_is_checked_for_its_layout_and_class_count(tmp_path: Path) -> None:
    root = _image_folder(tmp_path / "images", classes=3)
    config = load_checked_config(["dataset=cifar10_folder", f"dataset.root={root}", "knowledge.k=3"])
    assert config.knowledge.k == 3
    with pytest.raises(ConfigError, match=r"knowledge\.k=4 exceeds the 3 classes"):
        load_checked_config(["dataset=cifar10_folder", f"dataset.root={root}", "knowledge.k=4"])
    (root / "test").rename(root / "val")
    with pytest.raises(ConfigError, match=r"has no 'test/' subfolder"):
        load_checked_config(["dataset=cifar10_folder", f"dataset.root={root}"])


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("dataset.root=/tmp", "dataset.root"),
        ("dataset.download=true", "dataset.download"),
        ("teacher.checkpoint=/tmp/weights.safetensors", "teacher.checkpoint"),
        ("knowledge.pca_dim=8", "knowledge.pca_dim"),
    ],
)
def test_a_key_the_chosen_entry_ignores_is_refused_by_name(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(key) + "=.* has no effect"):
        load_checked_config([override])


@pytest.mark.parametrize("group", sorted(p.stem for p in (_ROOT / "conf" / "teacher").glob("*.yaml")))
@pytest.mark.parametrize("knowledge", sorted(p.stem for p in (_ROOT / "conf" / "knowledge").glob("*.yaml")))
def test_every_shipped_group_passes_the_checks(group: str, knowledge: str) -> None:
    config = load_config([f"teacher={group}"])
    if config.teacher.checkpoint and not Path(config.teacher.checkpoint).is_file():
        pytest.skip(f"{config.teacher.checkpoint} is not in this checkout (a missing checkpoint is tested below)")
    load_checked_config([f"teacher={group}", f"knowledge={knowledge}"])


def test_a_missing_teacher_checkpoint_says_how_to_get_one(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"teacher.checkpoint=.*nowhere.safetensors is not a file; train one with"):
        load_checked_config(["teacher=resnet_cifar", f"teacher.checkpoint={tmp_path}/nowhere.safetensors"])


def test_an_output_dir_that_cannot_be_written_is_named(tmp_path: Path) -> None:
    (tmp_path / "a_file").write_text("")
    config = load_config()
    with pytest.raises(ConfigError, match=r"output_dir=.*a_file is not a folder"):
        check_before_work(config, tmp_path / "a_file" / "run")


def test_the_writability_probe_leaves_nothing_behind(tmp_path: Path) -> None:
    check_writable(tmp_path / "not" / "yet", "output_dir")
    check_writable(tmp_path, "output_dir")
    assert list(tmp_path.iterdir()) == []


def test_eval_snrs_are_checked_against_the_channels_own_limits() -> None:
    low, high = SNR_DB_LIMITS
    assert load_config([f"channel.eval_snr_db=[{low},{high}]"]).channel.eval_snr_db == [low, high]
    for beyond in (low - 1, high + 5):
        with pytest.raises(ConfigError, match=rf"channel\.eval_snr_db: snr_db={beyond:g} is out of range; allowed range is \[-30, 50\]"):
            load_config([f"channel.eval_snr_db=[{beyond}]"])


def test_the_snr_limits_are_not_config_keys() -> None:
    for key in ("channel.snr_min_db=-40", "channel.snr_max_db=60"):
        with pytest.raises(ConfigError, match=key.split("=")[0].split(".")[1]):
            load_config([key])


def test_validating_a_config_imports_no_heavy_library(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from fedtosc.preflight import load_checked_config\n"
        "from fedtosc.channels import client_profiles, eval_links\n"
        "config = load_checked_config(['channel=heterogeneous_fading'])\n"
        "client_profiles(config.channel, config.federation.num_clients)\n"
        f"print(sorted(m for m in {_HEAVY!r} if m in sys.modules))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(_ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, check=True)
    assert result.stdout.strip() == "[]"


def test_help_imports_no_heavy_library(tmp_path: Path) -> None:
    code = f"import sys, runpy\nsys.argv = ['fedtosc', '--help']\ntry:\n    runpy.run_module('fedtosc.cli', run_name='__main__')\nexcept SystemExit:\n    pass\nprint('LOADED', sorted(m for m in {_HEAVY!r} if m in sys.modules))\n"
    env = {**os.environ, "PYTHONPATH": str(_ROOT)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env, check=True)
    assert result.stdout.strip().splitlines()[-1] == "LOADED []"


def test_a_bad_key_exits_2_with_one_line_and_no_traceback(tmp_path: Path) -> None:
    result = _fedtosc("run", "federation.rounds=abc", f"output_dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1
    assert "federation.rounds" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = _fedtosc("--debug", "run", "knowledge.k=50", f"output_dir={tmp_path / 'run'}", cwd=tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr and "knowledge.k=50" in result.stderr


@pytest.mark.parametrize("command", [["run"], ["train"], ["knowledge", "build"], ["deploy", "prepare"]])
def test_every_command_that_takes_a_config_checks_it_before_work(command: list[str], tmp_path: Path, capsys) -> None:
    assert main([*command, "knowledge.k=50", f"output_dir={tmp_path / 'run'}"]) == 2
    assert "knowledge.k=50 exceeds" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_no_command_imports_another_command_or_the_cli() -> None:
    for path in (_ROOT / "fedtosc" / "commands").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert not (name.startswith("fedtosc.commands.") or name == "fedtosc.cli"), f"{path.name} imports {name}"
