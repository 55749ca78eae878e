"""Waiting for a SuperLink to answer its health check: the one wait the simulation launcher, the
deployment commands and the deployment tests share."""

from __future__ import annotations

import http.server
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fedtosc.cli import main
from fedtosc.launch import FederationLaunchError, free_port, wait_healthy


class _Health(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass  # keep the test output clean


@pytest.fixture
def healthy_address() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_returns_once_the_address_answers_its_health_check(healthy_address: str) -> None:
    wait_healthy(healthy_address, timeout_s=30.0)


def test_nothing_listening_is_a_launch_error_naming_the_address_and_the_hint() -> None:
    address = f"127.0.0.1:{free_port()}"
    with pytest.raises(FederationLaunchError, match=rf"no SuperLink answered at {address} within 1 s; see superlink.log"):
        wait_healthy(address, timeout_s=1.0, hint="see superlink.log")


def test_a_superlink_that_exited_is_named_at_once_not_after_the_timeout() -> None:
    exited = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    exited.wait()
    with pytest.raises(FederationLaunchError, match="exited with code 3; see superlink.log"):
        wait_healthy(f"127.0.0.1:{free_port()}", timeout_s=600.0, process=exited, hint="see superlink.log")


def test_register_against_no_superlink_is_one_line_and_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    address = f"127.0.0.1:{free_port()}"
    public_key = tmp_path / "node0.pub"
    public_key.write_text("not used: the SuperLink never answers\n")

    status = main(["deploy", "register", "--insecure", "--superlink", address, "--wait-s", "1",
                   "--cli-home", str(tmp_path / "cli"), str(public_key)])

    assert status == 1
    assert capsys.readouterr().err == (f"fedtosc: no SuperLink answered at {address} within 1 s; "
                                       "is it running, on that port, with this CA?\n")
