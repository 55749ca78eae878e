"""Where a command's outputs go: the project checkout and a run's directory.

Shared by the commands that write runs (run, train, deploy) and studies; below the commands
layer, so no command imports another.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from fedtosc.config import ConfigError, ExperimentConfig, load_config

__all__ = ["make_run_dir", "open_run", "project_root", "run_dir_path"]


def project_root() -> Path:
    """The checkout holding pyproject.toml with the Flower app (server/, clients/, conf/)."""
    for candidate in (Path(__file__).resolve().parents[1], Path.cwd()):
        if (candidate / "pyproject.toml").is_file() and (candidate / "server" / "server_app.py").is_file():
            return candidate
    raise SystemExit("fedtosc run needs the project checkout (pyproject.toml, server/, clients/): run it from there")


def run_dir_path(config: ExperimentConfig, root: Path) -> Path:
    """`output_dir`, or `root`/runs/<timestamp>, resolved; ConfigError if Flower could not use it."""
    run_dir = Path(config.output_dir) if config.output_dir else root / "runs" / datetime.now().strftime("%Y%m%d-%H%M%S")
    run_dir = run_dir.expanduser().resolve()
    if ":" in str(run_dir):
        # Flower puts the installed app under the run dir on the workers' PYTHONPATH, where ':' splits.
        raise ConfigError(f"output_dir={run_dir} contains ':', which breaks Flower's module path; choose another")
    return run_dir


def make_run_dir(config: ExperimentConfig, root: Path) -> Path:
    """Check the config before any work (fedtosc.preflight), then create the run directory
    (:func:`run_dir_path`) holding the resolved config; return it."""
    from fedtosc.preflight import check_before_work

    run_dir = run_dir_path(config, root)
    check_before_work(config, run_dir)
    # Imported after the check, so a bad config fails before anything heavier than the config loads.
    from fedtosc.run_config import write_run_config

    write_run_config(config, run_dir)
    return run_dir


def open_run(overrides: list[str], root: Path) -> tuple[ExperimentConfig, Path, bool]:
    """The config and directory a federated run works on, and whether it resumes.

    Without `resume=`, a new run directory (:func:`make_run_dir`).
    With `resume=<run dir>`, that run's own config plus the other overrides (e.g. more rounds),
    checked and written back; the ServerApp then continues from its checkpoint. `fedtosc run` and
    `fedtosc deploy run` both start here, so a simulated and a deployed run resume alike.
    """
    config = load_config(overrides)
    if config.resume is None:
        return config, make_run_dir(config, root), False
    from fedtosc.preflight import check_before_work
    from fedtosc.run_config import load_run_config, write_run_config

    run_dir = Path(config.resume).expanduser().resolve()
    config = load_run_config(run_dir, overrides=[o for o in overrides if not o.startswith("resume=")])
    check_before_work(config, run_dir)
    write_run_config(config, run_dir)
    return config, run_dir, True
