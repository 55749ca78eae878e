"""The four layers of docs/architecture.md, checked: imports point only down.

1. the core (data, channels, models, knowledge, losses, training, evaluation, and what they share);
2. federation glue (wire payloads, node data, the run record), Flower's public API allowed;
3. the roles (server/, clients/);
4. the commands and the CLI.

Each layer's modules are imported together in a fresh interpreter, and what that pulled in is
asserted (together: one interpreter start per layer, and a module reaching up is caught all the same).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

_ROOT = Path(__file__).resolve().parents[1]

CORE = [
    "fedtosc.config", "fedtosc.registries", "fedtosc.data", "fedtosc.data.datasets", "fedtosc.data.partition",
    "fedtosc.channels", "fedtosc.channels.blocks", "fedtosc.models", "fedtosc.models.teachers",
    "fedtosc.models.resnet", "fedtosc.knowledge", "fedtosc.knowledge.builder", "fedtosc.losses",
    "fedtosc.training", "fedtosc.evaluation", "fedtosc.experiment", "fedtosc.teacher_builders", "fedtosc.outcomes",
]
GLUE = [
    "fedtosc.federation.messages", "fedtosc.federation.payloads", "fedtosc.federation.node_data",
    "fedtosc.federation.client_round", "fedtosc.federation.wire", "fedtosc.run_results", "fedtosc.metrics_log",
    "fedtosc.run_config",
]
ROLES = ["server.server_app", "clients.client_app"]

_FLOWER = ("flwr",)
_GLUE = ("fedtosc.federation", "fedtosc.run_results", "fedtosc.metrics_log")
_ROLES = ("server", "clients")
_TOP = ("fedtosc.commands", "fedtosc.cli")


def _imported(modules: list[str]) -> set[str]:
    code = (
        f"import json, sys, importlib; [importlib.import_module(m) for m in {modules!r}]; "
        "print(json.dumps(sorted(sys.modules)))"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=_ROOT, capture_output=True, text=True, check=True)
    return set(json.loads(completed.stdout.splitlines()[-1]))


def _under(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in packages))


def test_the_core_imports_no_flower_glue_roles_or_commands() -> None:
    assert _under(_imported(CORE), _FLOWER + _GLUE + _ROLES + _TOP) == []


def test_the_glue_imports_no_roles_or_commands() -> None:
    assert _under(_imported(GLUE), _ROLES + _TOP) == []


@pytest.mark.parametrize(("role", "other_role"), [("server.server_app", "clients"), ("clients.client_app", "server")])
def test_a_role_imports_neither_the_other_role_nor_the_commands(role: str, other_role: str) -> None:
    assert _under(_imported([role]), _TOP + (other_role,)) == []
