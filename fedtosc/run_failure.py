"""Why a run stopped without results, told by the ServerApp to whoever launched it.

The ServerApp runs in another process (a SuperExec child, or the server box in a deployment), so
what reaches the launcher is a log. A run that stops on a failed round writes its reason here, in
the run directory; `fedtosc run` and `fedtosc deploy run` end with that one line, and the resume
hint, instead of a traceback about a missing `results.json`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["clear_failure", "describe_ended_run", "record_failure"]

_FAILURE_FILE = "failure.txt"


def record_failure(run_dir: Path, reason: str) -> None:
    (run_dir / _FAILURE_FILE).write_text(reason.strip() + "\n")


def clear_failure(run_dir: Path) -> None:
    """A resumed run starts with no failure on record."""
    (run_dir / _FAILURE_FILE).unlink(missing_ok=True)


def describe_ended_run(run_dir: Path, log_hint: str, resume_command: str = "fedtosc run") -> str:
    """The message for a run that ended without `results.json`: its recorded reason (or where the
    log is), and how to finish it when rounds were checkpointed (`resume_command` resume=<run dir>)."""
    failure = run_dir / _FAILURE_FILE
    reason = failure.read_text().strip() if failure.is_file() else f"the ServerApp's error is in {log_hint}"
    if (run_dir / "checkpoint.safetensors").is_file():
        return f"{reason}\nRounds finished so far are checkpointed: fix the cause, then `{resume_command} resume={run_dir}`."
    return reason
