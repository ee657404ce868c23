"""Start the local stack in the foreground: model server, code server, webserver, daemon, gateway.

Ctrl-C (or SIGTERM) stops every process it started. Ports and folders come from the
environment; see the README's configuration table.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def main() -> int:
    host = os.environ.get("CONSTELLATION_HOST", "127.0.0.1")
    grpc_port = int(os.environ.get("CONSTELLATION_GRPC_PORT", "4000"))
    dagster_port = int(os.environ.get("CONSTELLATION_DAGSTER_PORT", "3000"))
    api_port = int(os.environ.get("CONSTELLATION_API_PORT", "8000"))
    model_port = int(os.environ.get("CONSTELLATION_MODEL_SERVER_PORT", "8080"))
    home = Path(os.environ.get("DAGSTER_HOME", ROOT / ".dagster")).resolve()
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "CONSTELLATION_DATA_ROOT": str(
            Path(os.environ.get("CONSTELLATION_DATA_ROOT", ROOT / "data")).resolve()
        ),
        "CONSTELLATION_ARTIFACT_ROOT": str(
            Path(os.environ.get("CONSTELLATION_ARTIFACT_ROOT", ROOT / ".artifacts")).resolve()
        ),
        "CONSTELLATION_OUTPUT_ROOT": str(Path(os.environ.get("CONSTELLATION_OUTPUT_ROOT", ROOT / "outputs")).resolve()),
        "CONSTELLATION_DAGSTER_URL": f"http://{host}:{dagster_port}",
        "CONSTELLATION_MODEL_SERVER_HOST": host,
        "CONSTELLATION_MODEL_SERVER_PORT": str(model_port),
        # Set it to use another server of the protocol (Triton, KServe); ours still starts, unused.
        "CONSTELLATION_MODEL_SERVER_URL": os.environ.get("CONSTELLATION_MODEL_SERVER_URL")
        or f"http://{host}:{model_port}",
        "CONSTELLATION_MODELS_ROOT": str(Path(os.environ.get("CONSTELLATION_MODELS_ROOT", ROOT / "models")).resolve()),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    ports = {"code server": grpc_port, "webserver": dagster_port, "gateway": api_port, "model server": model_port}
    for name, port in ports.items():
        if _port_open(host, port):
            print(f"port {port} ({name}) is already in use; set another with the env vars in the README")
            return 1
    # The database examples in sample_dags.txt read the connection `samples`; locally it is an
    # SQLite file written by `make run` (scripts/sample_data.py), unless the server names another.
    sample_db = Path(env["CONSTELLATION_DATA_ROOT"]) / "samples.db"
    if "CONSTELLATION_DB_SAMPLES_URL" not in env and sample_db.exists():
        env["CONSTELLATION_DB_SAMPLES_URL"] = f"sqlite:///{sample_db}"
    workspace = _prepare_home(home, host, grpc_port)

    commands = {
        # First, and waited for last: it spends seconds importing torch while the others start.
        "model server": [sys.executable, "-m", "model_server"],
        "code server": [
            BIN / "dagster",
            "api",
            "grpc",
            "-m",
            "orchestrator.assets.repository",
            "-h",
            host,
            "-p",
            str(grpc_port),
            "--location-name",
            "constellation",
        ],
        "webserver": [BIN / "dagster-webserver", "-h", host, "-p", str(dagster_port), "-w", workspace],
        "daemon": [BIN / "dagster-daemon", "run", "-w", workspace],
        "gateway": [BIN / "uvicorn", "api.main:app", "--host", host, "--port", str(api_port)],
    }
    waits = {"code server": grpc_port, "webserver": dagster_port, "gateway": api_port}
    children: dict[str, subprocess.Popen[bytes]] = {}
    stopping = False

    def stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        for name, command in commands.items():
            # Own process group each: Ctrl-C reaches only us, and we stop them in order.
            children[name] = subprocess.Popen(
                list(map(str, command)), cwd=ROOT, env=env, start_new_session=True
            )
            if name in waits and not _wait_for_port(host, waits[name], children[name], lambda: stopping):
                if stopping:  # Ctrl-C while starting up is a normal stop
                    return 0
                print(f"{name} did not start; see its output above")
                return 1
        if not _wait_for_port(host, model_port, children["model server"], lambda: stopping):
            if stopping:
                return 0
            print("model server did not start; see its output above")
            return 1
        print(
            f"\nConstellation is up:\n  gateway   http://{host}:{api_port}  (docs at /docs)\n"
            f"  Dagster   http://{host}:{dagster_port}  (main@constellation)\n"
            f"  models    {env['CONSTELLATION_MODEL_SERVER_URL']}  (models root {env['CONSTELLATION_MODELS_ROOT']})\n"
            f"  data root {env['CONSTELLATION_DATA_ROOT']}\nCtrl-C stops everything.\n",
            flush=True,
        )
        # Without the model server only model operations fail (a big model may get it killed): keep the rest.
        reported: set[str] = set()
        while not stopping:
            for name, child in children.items():
                if child.poll() is None or name in reported:
                    continue
                if name != "model server":
                    print(f"{name} exited with code {child.returncode}; stopping the stack")
                    return 1
                reported.add(name)
                print(f"model server exited with code {child.returncode}; model operations fail until a restart")
            time.sleep(0.5)
        return 0
    finally:
        _stop_all(children)


def _prepare_home(home: Path, host: str, grpc_port: int) -> Path:
    home.mkdir(parents=True, exist_ok=True)
    if not (home / "dagster.yaml").exists():
        shutil.copy(ROOT / "deploy" / "local" / "dagster.yaml", home / "dagster.yaml")
    workspace = home / "workspace.yaml"
    entries = f"  - grpc_server:\n      host: {host}\n      port: {grpc_port}\n      location_name: constellation\n"
    # More code locations to serve beside ours (e.g. the benchmark's baseline): YAML list items.
    extra = os.environ.get("CONSTELLATION_EXTRA_WORKSPACE")
    if extra:
        entries += Path(extra).read_text()
    workspace.write_text("load_from:\n" + entries)
    return workspace


def _port_open(host: str, port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _wait_for_port(
    host: str, port: int, child: subprocess.Popen[bytes], stopping, timeout_s: float = 120
) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and not stopping():
        if child.poll() is not None:
            return False
        if _port_open(host, port):
            return True
        time.sleep(0.2)
    return False


def _stop_all(children: dict[str, subprocess.Popen[bytes]]) -> None:
    for child in reversed(children.values()):
        if child.poll() is None:
            os.killpg(child.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children.values():
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()


if __name__ == "__main__":
    sys.exit(main())
