"""Run a study's grid through Hydra multirun: one `fedtosc run` (or `train`) per cell, resumable.

The grid is `hydra.sweeper.params` in conf/study/<name>.yaml; command-line overrides replace an
axis (`method=full,labels_only`) or fix any other key (`federation.rounds=2`). Hydra's basic
sweeper expands and validates the grid; each cell runs as a child process (so Flower, Ray and
torch state never leak between cells) into <study>/cells/<axes>/. A cell whose results.json is
complete and whose stored config equals the cell's config now is skipped, so a study resumes;
with `run_missing=False` nothing runs and the others are reported `missing`, so a grid finished in
parts can be summarized over whatever has landed.

Arms: a study may name arms (`Study.arms`: name -> overrides), each a different training config
(a method, or a specialist's own channel). The grid runs once per arm with the arm's overrides,
which pin the keys they set (an arm's `seed=0` replaces the seed axis for that arm), and `arm` is
an axis of every cell; `arm=a,b` on the command line runs only those arms. A study's follow-up
(`Study.follow_up`) then derives more cells from the finished ones, e.g. a fixed-rate arm at the
rate a learned-rate cell sent, and runs them the same way.
"""

from __future__ import annotations

import functools
import hashlib
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, OverrideParseException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from fedtosc.config import ConfigError, config_from_json, config_to_json, default_config_dir, register_schema
from fedtosc.preflight import check_before_work
from fedtosc.registries import STUDIES
from fedtosc.registry import UnknownEntryError
from fedtosc.results import read_results, write_json_atomic
from fedtosc.run_dir import project_root

__all__ = ["ARM", "CELL_FILE", "FINISHED", "CellOutcome", "cell_name", "run_study"]

ARM = "arm"  # the axis naming a cell's arm, in studies that have arms
CELL_FILE = "cell.json"  # the cell's axis values, beside the run's own files
FINISHED = ("ran", "skipped")  # the statuses of cells with complete results
LOG_FILE = "fedtosc.log"
_MAX_NAME_CHARS = 120


@dataclass
class CellOutcome:
    """What happened to one cell: `ran`, `skipped` (already complete), `missing` (not complete, and
    not run: `run_missing=False`) or `failed`."""

    run_dir: Path
    axes: dict[str, str]
    status: str
    seconds: float = 0.0
    message: str = ""


def cell_name(axes: dict[str, str]) -> str:
    """A readable, filesystem-safe directory name from the cell's axis values (sorted by key).

    No ':' (nor '='): Flower puts the app installed under the run dir on Ray workers' PYTHONPATH,
    where a colon splits the path and the ClientApp no longer imports.
    """
    parts = [f"{key}-{value.replace(',', '+')}" for key, value in sorted(axes.items())]
    name = re.sub(r"[^A-Za-z0-9._+-]", "_", "__".join(parts)) or "cell"
    if len(name) > _MAX_NAME_CHARS:
        digest = hashlib.sha1(name.encode()).hexdigest()[:10]
        name = f"{name[: _MAX_NAME_CHARS - 11]}-{digest}"
    return name


def run_study(
    study: str, overrides: list[str], study_dir: Path, centralized: bool = False, run_missing: bool = True
) -> list[CellOutcome]:
    """Run every cell of `study` (a name in fedtosc.registries.STUDIES) not already complete under
    study_dir/cells/: each selected arm's grid, then the cells its follow-up derives. With
    `run_missing=False`, run none: the incomplete cells come back `missing`.

    Raises ConfigError for an unknown study or arm, a key the schema lacks or a grid Hydra can't compose.
    """
    try:
        entry = STUDIES.get(study)
    except UnknownEntryError as error:
        raise ConfigError(str(error)) from None
    study_dir = study_dir.expanduser().resolve()
    if ":" in str(study_dir):
        raise ConfigError(f"study directory {study_dir} contains ':', which breaks Flower's app path on Ray workers")
    arms, overrides = _selected_arms(study, entry.arms, overrides)
    run = functools.partial(_run_grid, study, entry.conf, study_dir=study_dir, centralized=centralized, run_missing=run_missing)
    outcomes = [outcome for arm, pinned in arms.items() for outcome in run(arm, _pinned_over(overrides, pinned))]
    if entry.follow_up is not None:
        finished = [outcome for outcome in outcomes if outcome.status in FINISHED]
        for arm, pinned in entry.derive(finished):
            outcomes += run(arm, _pinned_over(overrides, pinned))
    return outcomes


def _selected_arms(study: str, arms: dict[str, tuple[str, ...]], overrides: list[str]) -> tuple[dict, list[str]]:
    """The arms to run ({None: ()} for a study without arms) and the overrides without `arm=`."""
    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as error:
        # Hydra's grammar refuses characters a shell would have expanded (`~`, unquoted `$`).
        raise ConfigError(f"cannot parse the overrides of study {study}: {error}; quote the value "
                          "(key='...') and spell paths out in full (no ~)") from None
    chosen = [
        str(value)
        for o in parsed
        if o.key_or_group == ARM
        for value in (o.sweep_string_iterator() if o.is_sweep_override() else [o.value()])
    ]
    rest = [text for text, o in zip(overrides, parsed, strict=True) if o.key_or_group != ARM]
    if not arms:
        if chosen:
            raise ConfigError(f"study {study} has no arms; it sweeps its grid only")
        return {None: ()}, rest
    unknown = [name for name in chosen if name not in arms]
    if unknown:
        raise ConfigError(f"study {study} has no arm {unknown}; its arms: {list(arms)}")
    return {name: pins for name, pins in arms.items() if not chosen or name in chosen}, rest


def _pinned_over(overrides: list[str], pinned: tuple[str, ...] | list[str]) -> list[str]:
    """`overrides` with the keys `pinned` sets replaced by `pinned`'s values (an arm's own settings win)."""
    parser = OverridesParser.create()
    keys = {o.key_or_group for o in parser.parse_overrides(list(pinned))}
    kept = [text for text, o in zip(overrides, parser.parse_overrides(overrides), strict=True) if o.key_or_group not in keys]
    return [*kept, *pinned]


def _run_grid(study: str, conf_name: str, arm: str | None, overrides: list[str], study_dir: Path, centralized: bool,
              run_missing: bool) -> list[CellOutcome]:
    """One Hydra multirun over the grid of conf/study/<conf_name>.yaml under `overrides`."""
    task = functools.partial(
        _run_cell,
        cells_dir=study_dir / "cells",
        axis_keys=_axis_keys(conf_name, overrides),
        command="train" if centralized else "run",
        arm=arm,
        run_missing=run_missing,
    )
    hydra_overrides = [
        *overrides,
        f"+study={conf_name}",
        f"hydra.sweep.dir={_quoted(study_dir)}",
        # Cells choose their own directories; Hydra's per-job folder is the study dir itself.
        "hydra.sweep.subdir=.",
        "hydra.output_subdir=null",
        "hydra/job_logging=none",
        "hydra.job.chdir=false",
    ]
    register_schema()
    try:
        with initialize_config_dir(config_dir=str(default_config_dir()), job_name=f"study-{study}", version_base="1.3"):
            hydra = GlobalHydra.instance().hydra
            assert hydra is not None
            batches = hydra.multirun(config_name="config", task_function=task, overrides=hydra_overrides)
    except (HydraException, OmegaConfBaseException) as error:
        raise ConfigError(f"study {study}: {error}") from error
    return [job.return_value for batch in batches for job in batch]


def _axis_keys(conf_name: str, overrides: list[str]) -> list[str]:
    """The grid's axes: the study's own sweep params, plus any key swept on the command line."""
    params = OmegaConf.load(default_config_dir() / "study" / f"{conf_name}.yaml").hydra.sweeper.params
    keys = set(params)
    for override in OverridesParser.create().parse_overrides(overrides):
        if override.is_sweep_override():
            keys.add(override.key_or_group)
    return sorted(keys)


def _quoted(path: Path) -> str:
    if "'" in str(path):
        raise ConfigError(f"study directory {path} contains a quote; choose another --output")
    return f"'{path}'"


def _run_cell(cfg: DictConfig, cells_dir: Path, axis_keys: list[str], command: str, arm: str | None,
              run_missing: bool) -> CellOutcome:
    """Hydra's task function: one cell, run as `fedtosc <command> <the cell's overrides>`."""
    overrides = list(HydraConfig.get().overrides.task)
    values = {o.key_or_group: str(o.value()) for o in OverridesParser.create().parse_overrides(overrides)}
    axes = {key: values[key] for key in axis_keys if key in values}
    if arm is not None:
        axes[ARM] = arm
    run_dir = cells_dir / cell_name(axes)
    try:
        expected = config_from_json({**OmegaConf.to_container(cfg, resolve=True), "output_dir": str(run_dir)})
        check_before_work(expected, run_dir)
    except ConfigError as error:
        print(f"[invalid] {run_dir.name}: {error}", flush=True)
        return CellOutcome(run_dir, axes, "failed", message=str(error))
    if _is_complete(run_dir, config_to_json(expected)):
        print(f"[skipped] {run_dir.name}: complete", flush=True)
        return CellOutcome(run_dir, axes, "skipped")
    if not run_missing:
        print(f"[missing] {run_dir.name}", flush=True)
        return CellOutcome(run_dir, axes, "missing")
    run_dir.mkdir(parents=True, exist_ok=True)
    # A stale results.json beside a new config.yaml would pass for complete if this run fails.
    (run_dir / "results.json").unlink(missing_ok=True)
    write_json_atomic(run_dir / CELL_FILE, {"axes": axes, "overrides": overrides, "command": command})
    argv = [sys.executable, "-m", "fedtosc.cli", command, *overrides, f"output_dir={_quoted(run_dir)}"]
    started = time.perf_counter()
    with (run_dir / LOG_FILE).open("w") as log:
        returncode = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, check=False).returncode
    seconds = time.perf_counter() - started
    if returncode != 0 or not _is_complete(run_dir, config_to_json(expected)):
        message = f"fedtosc {command} exited with {returncode}; see {run_dir / LOG_FILE}"
        print(f"[failed] {run_dir.name}: {message}", flush=True)
        return CellOutcome(run_dir, axes, "failed", seconds, message)
    print(f"[ran] {run_dir.name} in {seconds:.0f} s", flush=True)
    return CellOutcome(run_dir, axes, "ran", seconds)


def _is_complete(run_dir: Path, expected_config: dict[str, Any]) -> bool:
    """results.json has every section, and the run's config.yaml is the config this cell wants,
    wherever the clone and the home directory were when it ran (so committed cells count in a fresh clone)."""
    try:
        read_results(run_dir)
        stored = OmegaConf.to_container(OmegaConf.load(run_dir / "config.yaml"))
        return _same_settings(config_to_json(config_from_json(stored)), expected_config)
    except (OSError, ValueError, OmegaConfBaseException):
        return False


def _same_settings(stored: Any, expected: Any, key: str = "") -> bool:
    """Equal configs, with absolute paths compared by where they sit in their clone or home.

    A cell records absolute paths (the shipped teacher, the dataset root, its own output_dir): the
    clone that ran it may have lived elsewhere. A recorded path matches when it ends with the
    expected path's part below this project or this home directory; output_dir is the cell itself.
    """
    if isinstance(stored, dict) and isinstance(expected, dict):
        return stored.keys() == expected.keys() and all(
            _same_settings(stored[name], expected[name], f"{key}.{name}".lstrip(".")) for name in expected
        )
    if stored == expected or key == "output_dir":
        return True
    if not (isinstance(stored, str) and isinstance(expected, str) and expected.startswith("/")):
        return False
    for anchor in (project_root(), Path.home()):
        if Path(expected).is_relative_to(anchor):
            below = Path(expected).relative_to(anchor).parts
            return Path(stored).parts[-len(below):] == below
    return False
