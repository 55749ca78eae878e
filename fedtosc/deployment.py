"""Deploying fedtosc on real machines: TLS material, SuperNode keys, and the Flower command lines.

The server box runs `flower-superlink` (teacher and knowledge store stay local to it); each edge
box runs `flower-supernode` with its node config (its own data, channel profile). TLS and SuperNode
authentication are on by default; turning either off takes an explicit `insecure=True` /
`node_auth=False`. `fedtosc deploy ...` (fedtosc/commands/deploy.py) and docs/deployment.md use this.
"""

from __future__ import annotations

import datetime as _dt
import ipaddress
import json
import signal
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from fedtosc.app_source import stage_app_source
from fedtosc.launch import offline_flower_env, run_config_arg, stop_run_processes, venv_executable

__all__ = [
    "DEFAULT_SUPERLINK_PORT",
    "NodeSettings",
    "TlsFiles",
    "check_node_data",
    "deployment_overrides",
    "flwr_run",
    "load_node_settings",
    "make_certificates",
    "make_node_key",
    "node_config_arg",
    "register_nodes",
    "run_foreground",
    "superlink_command",
    "supernode_command",
    "write_cli_config",
]

# flwr 1.42 serves the Fleet, Control and Runtime APIs over HTTP on this one SuperLink port.
DEFAULT_SUPERLINK_PORT = 9091
# The SuperNode's own Runtime API (its ClientApp processes connect here); flwr's default.
DEFAULT_SUPERNODE_RUNTIME_PORT = 9094
# SuperLink's `flower-superexec` child reaches the Runtime API over loopback, so the server
# certificate must name loopback as well as the address edge boxes dial.
_LOOPBACK_NAMES = ("localhost", "127.0.0.1")


@dataclass(frozen=True)
class TlsFiles:
    """PEM files: the CA every box trusts, and the SuperLink's certificate and key."""

    ca_certificate: Path
    ca_key: Path
    server_certificate: Path
    server_key: Path


def make_certificates(out_dir: Path, hosts: list[str], days: int = 365) -> TlsFiles:
    """A self-signed CA and a server certificate for `hosts` (DNS names or IPs) plus loopback.

    Keys are EC P-384. `ca.key` signs nothing else: keep it off the SuperLink box once done.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    out_dir.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.timezone.utc)
    valid_from, valid_to = now - _dt.timedelta(minutes=5), now + _dt.timedelta(days=days)

    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fedtosc federation CA")])
    ca_certificate = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from).not_valid_after(valid_to)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(ca_key, hashes.SHA384())
    )

    names = list(dict.fromkeys([*hosts, *_LOOPBACK_NAMES]))
    server_key = ec.generate_private_key(ec.SECP384R1())
    server_certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(valid_from).not_valid_after(valid_to)
        .add_extension(x509.SubjectAlternativeName([_general_name(name) for name in names]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA384())
    )

    files = TlsFiles(out_dir / "ca.crt", out_dir / "ca.key", out_dir / "server.pem", out_dir / "server.key")
    pem = serialization.Encoding.PEM
    files.ca_certificate.write_bytes(ca_certificate.public_bytes(pem))
    files.server_certificate.write_bytes(server_certificate.public_bytes(pem))
    for path, key in ((files.ca_key, ca_key), (files.server_key, server_key)):
        path.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        path.chmod(0o600)
    return files


def _general_name(name: str):  # noqa: ANN202 - x509.GeneralName
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def make_node_key(out_dir: Path, name: str) -> tuple[Path, Path]:
    """A SuperNode key pair as flwr 1.42 reads it: EC P-384, OpenSSH private key and `.pub`.

    The private key stays on the edge box; the server registers the `.pub` file.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    out_dir.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP384R1())
    private_path, public_path = out_dir / name, out_dir / f"{name}.pub"
    private_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption())
    )
    private_path.chmod(0o600)
    public_path.write_bytes(
        key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH) + b"\n"
    )
    return private_path, public_path


def superlink_command(
    tls_dir: Path | None,
    *,
    host: str = "0.0.0.0",
    port: int = DEFAULT_SUPERLINK_PORT,
    node_auth: bool = True,
    database: str,
) -> list[str]:
    """`flower-superlink` in deployment mode; `tls_dir=None` means insecure (plain HTTP)."""
    command = [venv_executable("flower-superlink"), "--host", host, "--port", str(port), "--database", database,
               "--disable-runtime-dependency-installation"]
    if tls_dir is None:
        command.append("--insecure")
    else:
        command += [
            "--ssl-ca-certfile", str(tls_dir / "ca.crt"),
            "--ssl-certfile", str(tls_dir / "server.pem"),
            "--ssl-keyfile", str(tls_dir / "server.key"),
        ]
    if node_auth:
        command.append("--enable-supernode-auth")
    return command


@dataclass(frozen=True)
class NodeSettings:
    """What one edge box needs: where the SuperLink is, how to trust and prove itself, its node config."""

    superlink: str
    root_certificates: Path | None  # None: insecure (plain HTTP)
    private_key: Path | None  # None: no SuperNode authentication
    node_config: dict[str, str | int | float | bool] = field(default_factory=dict)
    runtime_port: int = DEFAULT_SUPERNODE_RUNTIME_PORT


def load_node_settings(path: Path, *, insecure: bool = False) -> NodeSettings:
    """Read a node file (see clients/deploy/node0.toml); relative paths are relative to that file.

    Without `insecure`, a missing `root-certificates` or `private-key` is an error, never a silent downgrade.
    """
    data = tomllib.loads(path.read_text())
    known = {"superlink", "root-certificates", "private-key", "runtime-port", "node-config"}
    if unknown := sorted(set(data) - known):
        raise ValueError(f"{path}: unknown keys {unknown}; known: {sorted(known)}")
    if "superlink" not in data:
        raise ValueError(f"{path}: `superlink` (host:port of the SuperLink) is required")
    node_config = dict(data.get("node-config", {}))
    if "data-path" not in node_config and "partition-id" not in node_config:
        raise ValueError(f"{path}: [node-config] needs data-path (this box's own data) or partition-id "
                         "(a partition of the server's dataset, which the box must then hold)")
    for key in ("data-path", "cache-dir"):  # like the certificates: relative to the node file
        if key in node_config:
            node_config[key] = str((path.parent / Path(str(node_config[key])).expanduser()).resolve())

    def resolve(key: str) -> Path | None:
        if insecure:
            return None
        if key not in data:
            raise ValueError(f"{path}: `{key}` is required (TLS and SuperNode authentication are on; "
                             "pass --insecure only for a trusted test network)")
        return (path.parent / Path(str(data[key])).expanduser()).resolve()

    return NodeSettings(
        superlink=str(data["superlink"]),
        root_certificates=resolve("root-certificates"),
        private_key=resolve("private-key"),
        node_config=node_config,
        runtime_port=int(data.get("runtime-port", DEFAULT_SUPERNODE_RUNTIME_PORT)),
    )


def check_node_data(settings: NodeSettings) -> str | None:
    """Read the box's `data-path` before it joins: a NodeDataError naming the file stops the SuperNode
    here. Returns a one-line summary (None for a partition node, which holds the server's dataset)."""
    from fedtosc.data.local import read_node_data

    if "data-path" not in settings.node_config:
        return None
    path = Path(str(settings.node_config["data-path"]))
    samples = read_node_data(path)
    shape = "x".join(str(side) for side in samples.images.shape[1:])
    return f"node data {path}: {len(samples)} samples ({shape}), {int((samples.labels != '').sum())} labelled by name"


def deployment_overrides(overrides: list[str]) -> list[str]:
    """A deployment's defaults before the user's overrides: boxes own their data, so knowledge
    travels as the server's transfer set (knowledge.delivery=transfer_set) unless the run says otherwise.
    A resumed run (`resume=<run dir>`) keeps the delivery it was started with."""
    if any(override.lstrip("+~").startswith(("knowledge.delivery=", "resume=")) for override in overrides):
        return list(overrides)
    return ["knowledge.delivery=transfer_set", *overrides]


def node_config_arg(node_config: dict[str, str | int | float | bool]) -> str:
    """`--node-config` text: space-separated TOML `key=value` pairs (strings quoted)."""
    return " ".join(f"{key}={json.dumps(value) if isinstance(value, str) else _toml_scalar(value)}"
                    for key, value in node_config.items())


def _toml_scalar(value: int | float | bool) -> str:
    return ("true" if value else "false") if isinstance(value, bool) else repr(value)


def supernode_command(settings: NodeSettings, *, max_wait_time_s: float | None = None) -> list[str]:
    """`flower-supernode` for one edge box; TLS/auth flags follow what `settings` holds."""
    command = [venv_executable("flower-supernode"), "--superlink", settings.superlink,
               "--host", "127.0.0.1", "--port", str(settings.runtime_port),
               "--node-config", node_config_arg(settings.node_config)]
    if settings.root_certificates is None:
        command.append("--insecure")
    else:
        command += ["--root-certificates", str(settings.root_certificates)]
    if settings.private_key is not None:
        command += ["--auth-supernode-private-key", str(settings.private_key)]
    if max_wait_time_s is not None:
        command += ["--max-wait-time", str(max_wait_time_s)]
    return command


def write_cli_config(flwr_home: Path, name: str, address: str, root_certificates: Path | None) -> Path:
    """`$FLWR_HOME/config.toml` naming one SuperLink connection, for `flwr run` / `flwr supernode`."""
    flwr_home.mkdir(parents=True, exist_ok=True)
    trust = "insecure = true" if root_certificates is None else f"root-certificates = {json.dumps(str(root_certificates.resolve()))}"
    path = flwr_home / "config.toml"
    path.write_text(f'[superlink]\ndefault = "{name}"\n\n[superlink.{name}]\naddress = "{address}"\n{trust}\n')
    return path


def register_nodes(flwr_home: Path, superlink_name: str, public_keys: list[Path]) -> dict[Path, int]:
    """`flwr supernode register` for each public key (named after its file): the node id of each.

    The registrations run side by side: each is a `flwr` process whose start-up (imports) costs
    seconds, and one after another they made admitting three boxes take minutes on a loaded machine.
    """
    processes = {key: subprocess.Popen(_register_command(superlink_name, key), env=offline_flower_env(flwr_home),
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for key in public_keys}
    return {key: _registered_node_id(key, process) for key, process in processes.items()}


def _register_command(superlink_name: str, public_key: Path) -> list[str]:
    return [venv_executable("flwr"), "supernode", "register", str(public_key), superlink_name, "--format", "json",
            "--name", public_key.stem]


def _registered_node_id(public_key: Path, process: subprocess.Popen) -> int:
    stdout, stderr = process.communicate()
    try:
        reply = json.loads(stdout[stdout.index("{"):])
    except ValueError:
        reply = {}
    if process.returncode != 0 or not reply.get("success"):
        raise RuntimeError(f"registering {public_key} failed (exit {process.returncode}): {stdout.strip()} {stderr.strip()}")
    return int(reply["node-id"])


def run_foreground(command: list[str], flwr_home: Path) -> int:
    """Run a SuperLink/SuperNode until it exits or this process gets Ctrl-C/SIGTERM; leave nothing behind.

    Flower starts `flower-superexec` (and, under it, ServerApp/ClientApp processes) in new
    sessions; the run-local FLWR_HOME marks them so that `stop_run_processes` finds them all.
    """
    flwr_home.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(command, env=offline_flower_env(flwr_home), start_new_session=True)
    previous = signal.signal(signal.SIGTERM, _raise_keyboard_interrupt)
    try:
        return process.wait()
    except KeyboardInterrupt:
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_run_processes(process, flwr_home)


def _raise_keyboard_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def flwr_run(project_root: Path, flwr_home: Path, superlink_name: str, run_dir: Path, resume: bool = False) -> int:
    """`flwr run <project> <superlink> --stream` for a prepared run dir; blocks until the run ends
    and returns its exit code. It is 0 even when the ServerApp raised, and non-zero when the
    SuperLink went away mid-run: only `results.json` proves a finished run.

    `resume`: the ServerApp continues from the run directory's last checkpoint. Stopping
    `flwr run` does not stop the run on the SuperLink: `flwr stop <run-id>` does.
    """
    source = stage_app_source(project_root, run_dir)  # what the bundle carries, no more
    command = [venv_executable("flwr"), "run", str(source), superlink_name, "--stream",
               "--run-config", run_config_arg(run_dir, resume)]
    # A stale results file from an earlier session in this directory must not pass for this one's.
    (run_dir / "results.json").unlink(missing_ok=True)
    return subprocess.run(command, env=offline_flower_env(flwr_home), cwd=project_root, check=False).returncode
