"""The exit statuses the README's fault table promises, as the shell sees them, for every kind of error
`fedtosc` can end with: a user error is one line and 2, a run that did not finish one line and 1,
Ctrl-C 130, anything else a traceback (Python's 1)."""

from __future__ import annotations

import importlib

import pytest

from fedtosc.cli import USER_ERRORS, main
from fedtosc.launch import FederationLaunchError

# A two-line message, as Hydra's are: the CLI joins it so that the fix is on the line with the key.
_MESSAGE = "knowledge.k=11 exceeds the dataset's 10 classes:\n  use knowledge.k <= 10"


def _failing_command(monkeypatch: pytest.MonkeyPatch, error: BaseException) -> None:
    """`fedtosc knowledge build` raises `error` (the CLI reads a command's handler when it builds its parser)."""
    def fail(args: object) -> int:
        raise error

    monkeypatch.setattr("fedtosc.commands.knowledge._build", fail)


@pytest.mark.parametrize(("module", "name"), USER_ERRORS)
def test_a_user_error_is_one_line_on_stderr_and_exit_2(
    module: str, name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    _failing_command(monkeypatch, getattr(importlib.import_module(module), name)(_MESSAGE))

    assert main(["knowledge", "build"]) == 2
    assert capsys.readouterr().err == "fedtosc: knowledge.k=11 exceeds the dataset's 10 classes: use knowledge.k <= 10\n"


def test_a_run_that_did_not_finish_is_one_line_and_exit_1(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    _failing_command(monkeypatch, FederationLaunchError("round 3: 0 usable client updates; fedtosc run resume=runs/x finishes it"))

    assert main(["knowledge", "build"]) == 1
    assert capsys.readouterr().err == "fedtosc: round 3: 0 usable client updates; fedtosc run resume=runs/x finishes it\n"


def test_ctrl_c_is_exit_130_and_says_how_to_continue(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    _failing_command(monkeypatch, KeyboardInterrupt())

    assert main(["knowledge", "build"]) == 130
    assert "resume=<run dir>" in capsys.readouterr().err


def test_any_other_error_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    # Not a message written for the user: hiding the traceback would hide the bug (Python exits 1).
    _failing_command(monkeypatch, ZeroDivisionError("division by zero"))

    with pytest.raises(ZeroDivisionError):
        main(["knowledge", "build"])


def test_debug_shows_the_traceback_of_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from fedtosc.config import ConfigError

    _failing_command(monkeypatch, ConfigError(_MESSAGE))

    with pytest.raises(ConfigError):
        main(["--debug", "knowledge", "build"])
