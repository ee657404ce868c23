"""Start the local stack in the foreground: model server, code server, webserver, daemon, gateway.

Ctrl-C (or SIGTERM) stops every process it started. Ports and folders come from the
environment; see the README's configuration table. The pieces are importable (`stack_env`,
`prepare_home`, `stack_commands`, `launch`) so that tests start or restart single processes
with exactly the commands `make run` uses.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent

# Which environment variable holds each process's port, and its default.
PORTS = {
    "model server": ("CONSTELLATION_MODEL_SERVER_PORT", 8080),
    "code server": ("CONSTELLATION_GRPC_PORT", 4000),
    "webserver": ("CONSTELLATION_DAGSTER_PORT", 3000),
    "gateway": ("CONSTELLATION_API_PORT", 8000),
}


def stack_env(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment every process gets: `environ` with ports, absolute folders and URLs filled in."""
    host = environ.get("CONSTELLATION_HOST", "127.0.0.1")
    # Dagster's UI has no login: on loopback unless asked otherwise, whatever CONSTELLATION_HOST is.
    dagster_host = environ.get("CONSTELLATION_DAGSTER_HOST", "127.0.0.1")
    ports = {var: environ.get(var, str(default)) for var, default in PORTS.values()}

    def folder(var: str, default: Path) -> str:
        return str(Path(environ.get(var, default)).resolve())

    model_port = ports["CONSTELLATION_MODEL_SERVER_PORT"]
    env = {
        **environ,
        **ports,
        "CONSTELLATION_HOST": host,
        "CONSTELLATION_DAGSTER_HOST": dagster_host,
        # The names the gateway and the webserver answer for (Host header): loopback and the bound hosts.
        "CONSTELLATION_ALLOWED_HOSTS": environ.get("CONSTELLATION_ALLOWED_HOSTS")
        or ",".join(dict.fromkeys(["localhost", "127.0.0.1", "[::1]", *_named(host), *_named(dagster_host)])),
        "DAGSTER_HOME": folder("DAGSTER_HOME", ROOT / ".dagster"),
        "CONSTELLATION_DATA_ROOT": folder("CONSTELLATION_DATA_ROOT", ROOT / "data"),
        # A folder, or s3://bucket/prefix (a URL, kept as given).
        "CONSTELLATION_ARTIFACT_ROOT": environ["CONSTELLATION_ARTIFACT_ROOT"]
        if environ.get("CONSTELLATION_ARTIFACT_ROOT", "").startswith("s3://")
        else folder("CONSTELLATION_ARTIFACT_ROOT", ROOT / ".artifacts"),
        "CONSTELLATION_OUTPUT_ROOT": folder("CONSTELLATION_OUTPUT_ROOT", ROOT / "outputs"),
        "CONSTELLATION_MODELS_ROOT": folder("CONSTELLATION_MODELS_ROOT", ROOT / "models"),
        "CONSTELLATION_DAGSTER_URL": f"http://{_reachable(dagster_host)}:{ports['CONSTELLATION_DAGSTER_PORT']}",
        "CONSTELLATION_MODEL_SERVER_HOST": host,
        # Set it to use another server of the protocol (Triton, KServe); ours still starts, unused.
        "CONSTELLATION_MODEL_SERVER_URL": environ.get("CONSTELLATION_MODEL_SERVER_URL")
        or f"http://{host}:{model_port}",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), environ.get("PYTHONPATH")])),
        # Shared by the code location and the model server; a fresh one per start when none is set.
        "CONSTELLATION_MODEL_SERVER_TOKEN": environ.get("CONSTELLATION_MODEL_SERVER_TOKEN", "").strip()
        or secrets.token_urlsafe(32),
    }
    # The database examples in sample_dags.txt read the connection `samples`; locally it is an
    # SQLite file written by `make run` (scripts/sample_data.py), unless the server names another.
    sample_db = Path(env["CONSTELLATION_DATA_ROOT"]) / "samples.db"
    if "CONSTELLATION_DB_SAMPLES_URL" not in env and sample_db.exists():
        env["CONSTELLATION_DB_SAMPLES_URL"] = f"sqlite:///{sample_db}"
    return env


def _named(host: str) -> list[str]:
    """`host` as a Host header names it ([::1] for ::1); nothing for the any-address (0.0.0.0, ::)."""
    if host in ("0.0.0.0", "::", ""):
        return []
    return [f"[{host}]" if ":" in host else host]


def _reachable(host: str) -> str:
    """An address that reaches a server bound to `host` (the any-address: through loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, f"[{host}]" if ":" in host else host)


def stack_hosts(env: Mapping[str, str]) -> dict[str, str]:
    """The address each process with a port binds to, from an environment made by `stack_env`."""
    return {
        name: env["CONSTELLATION_DAGSTER_HOST"] if name == "webserver" else env["CONSTELLATION_HOST"] for name in PORTS
    }


def stack_ports(env: Mapping[str, str]) -> dict[str, int]:
    """Each process's port, from an environment made by `stack_env`."""
    return {name: int(env[var]) for name, (var, _) in PORTS.items()}


def prepare_home(env: Mapping[str, str]) -> Path:
    """Write DAGSTER_HOME's workspace.yaml (and dagster.yaml, when missing); return the workspace file."""
    home = Path(env["DAGSTER_HOME"])
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(ROOT / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    workspace = home / "workspace.yaml"
    entries = (
        f"  - grpc_server:\n      host: {env['CONSTELLATION_HOST']}\n"
        f"      port: {env['CONSTELLATION_GRPC_PORT']}\n      location_name: constellation\n"
    )
    # More code locations to serve beside ours (e.g. the benchmark's baseline): YAML list items.
    extra = env.get("CONSTELLATION_EXTRA_WORKSPACE")
    if extra:
        entries += Path(extra).read_text()
    workspace.write_text("load_from:\n" + entries)
    return workspace


def stack_commands(env: Mapping[str, str]) -> dict[str, list[str]]:
    """The command of each process, in start order, from an environment made by `stack_env`."""
    host, ports = env["CONSTELLATION_HOST"], stack_ports(env)
    workspace = str(Path(env["DAGSTER_HOME"]) / "workspace.yaml")
    return {
        # First, and waited for last: it starts while the others do (torch is imported by its first transformers model).
        "model server": [sys.executable, "-m", "model_server"],
        "code server": [
            str(BIN / "dagster"),
            "api",
            "grpc",
            "-m",
            "orchestrator.assets.repository",
            "-h",
            host,
            "-p",
            str(ports["code server"]),
            "--location-name",
            "constellation",
        ],
        # dagster-webserver itself, behind the gateway's cross-site request rules (api/dagster_ui.py).
        "webserver": [
            sys.executable,
            "-m",
            "api.dagster_ui",
            "dagster-webserver",
            "-h",
            env["CONSTELLATION_DAGSTER_HOST"],
            "-p",
            str(ports["webserver"]),
            "-w",
            workspace,
        ],
        "daemon": [str(BIN / "dagster-daemon"), "run", "-w", workspace],
        # --no-proxy-headers: uvicorn would take X-Forwarded-For from 127.0.0.1; the gateway reads it
        # itself, from CONSTELLATION_TRUSTED_PROXIES only (api/main.py).
        "gateway": [
            str(BIN / "uvicorn"),
            "api.main:app",
            "--host",
            host,
            "--port",
            str(ports["gateway"]),
            "--no-proxy-headers",
        ],
    }


def launch(command: list[str], env: Mapping[str, str], output: IO[bytes] | None = None) -> subprocess.Popen[bytes]:
    """Start one process in its own process group (Ctrl-C reaches only us; we stop them in order)."""
    return subprocess.Popen(
        command,
        cwd=ROOT,
        env=dict(env),
        start_new_session=True,
        stdout=output,
        stderr=subprocess.STDOUT if output else None,
    )


def port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def wait_for_port(
    host: str,
    port: int,
    child: subprocess.Popen[bytes],
    stopping: Callable[[], bool] = lambda: False,
    timeout_s: float = 120,
) -> bool:
    """True once `port` answers; False if `child` exits, `stopping()` turns true or time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stopping():
        if child.poll() is not None:
            return False
        if port_open(host, port):
            return True
        time.sleep(0.2)
    return False


def stop_all(children: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group, last started first; SIGKILL what is still there after 15 s."""
    children = list(children)
    for child in reversed(children):
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


def main() -> int:
    env = stack_env(os.environ)
    host, ports, hosts = env["CONSTELLATION_HOST"], stack_ports(env), stack_hosts(env)
    for name, port in ports.items():
        if port_open(hosts[name], port):
            print(f"port {port} ({name}) is already in use; set another with the env vars in the README")
            return 1
    prepare_home(env)
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for name, command in stack_commands(env).items():
            children[name] = launch(command, env)
            waits = name in ports and name != "model server"  # the daemon has no port; the model server: below
            if waits and not wait_for_port(hosts[name], ports[name], children[name], lambda: stopping):
                return 0 if stopping else _did_not_start(name)  # Ctrl-C while starting up is a normal stop
        if not wait_for_port(host, ports["model server"], children["model server"], lambda: stopping):
            return 0 if stopping else _did_not_start("model server")
        print(banner(env), flush=True)
        commands = stack_commands(env)
        return _watch(children, lambda: stopping, restart=lambda: launch(commands["model server"], env))
    finally:
        stop_all(children.values())


def gateway_url(env: Mapping[str, str]) -> str:
    """Where the gateway of a stack started with `env` (made by `stack_env`) answers."""
    return f"http://{_reachable(env['CONSTELLATION_HOST'])}:{env['CONSTELLATION_API_PORT']}"


def banner(env: Mapping[str, str]) -> str:
    """What `make run` prints once everything answers: the URLs it serves, and how the CLI reaches them."""
    gateway = gateway_url(env)
    docs = "(token set: no /docs)" if env.get("CONSTELLATION_API_TOKEN") else f"(docs at {gateway}/docs)"
    lines = [
        "",
        "Constellation is up:",
        f"  gateway   {gateway}  {docs}",
        f"  Dagster   {env['CONSTELLATION_DAGSTER_URL']}  (main@constellation)",
        f"  models    {env['CONSTELLATION_MODEL_SERVER_URL']}  (models root {env['CONSTELLATION_MODELS_ROOT']})",
        f"  data root {env['CONSTELLATION_DATA_ROOT']}",
    ]
    # The command line finds a gateway on another port by CONSTELLATION_API_PORT or CONSTELLATION_URL.
    if gateway != "http://127.0.0.1:8000":
        lines.append(f"  command line: export CONSTELLATION_URL={gateway}")
    lines += ["Ctrl-C stops everything.", ""]
    return "\n".join(lines)


def _did_not_start(name: str) -> int:
    print(f"{name} did not start; see its output above")
    return 1


def _watch(
    children: dict[str, subprocess.Popen[bytes]],
    stopping: Callable[[], bool],
    restart: Callable[[], subprocess.Popen[bytes]] | None = None,
) -> int:
    """Wait for Ctrl-C; restart the model server when it dies; stop the stack if any other process exits."""
    # Without the model server only model operations fail (a big model may get it killed): keep the
    # rest, and start it again, waiting longer after each death so a crash loop does not spin.
    restarts, next_start = 0, 0.0
    while not stopping():
        for name, child in list(children.items()):
            if child.poll() is None:
                continue
            if name != "model server":
                print(f"{name} exited with code {child.returncode}; stopping the stack")
                return 1
            if restart is None or time.monotonic() < next_start:
                continue
            restarts += 1
            print(f"model server exited with code {child.returncode}; restarting it (restart {restarts})", flush=True)
            children[name] = restart()
            next_start = time.monotonic() + min(60.0, 2.0**restarts)
        time.sleep(0.5)
    return 0


if __name__ == "__main__":
    sys.exit(main())
