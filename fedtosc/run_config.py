"""A run directory's resolved config (config.yaml): written by the launcher, read by the ServerApp.

`fedtosc run resume=<run dir>` reads it back too, with any new overrides on top.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import OmegaConf

from fedtosc.config import ExperimentConfig, config_from_json

__all__ = ["CONFIG_FILE", "load_run_config", "write_run_config"]

CONFIG_FILE = "config.yaml"


def write_run_config(config: ExperimentConfig, run_dir: Path) -> None:
    """The resolved config, where the ServerApp (simulated or deployed) reads it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / CONFIG_FILE).write_text(OmegaConf.to_yaml(OmegaConf.structured(config)))


def load_run_config(run_dir: Path, overrides: list[str] | None = None) -> ExperimentConfig:
    """The resolved config a run directory holds, with optional `key=value` overrides on top."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: start runs with `fedtosc run`, which writes the resolved config there")
    merged = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(list(overrides or [])))
    return config_from_json(OmegaConf.to_container(merged))
