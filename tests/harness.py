"""What the tests share besides fixtures: the real local stack started as subprocesses (`make run`'s own
launcher), its processes one by one, free ports, a small real filesystem, Chromium's flags, the CLI as
installed. Fixtures built on these live in tests/conftest.py; test modules import from here, never from a
conftest (each folder may have its own conftest.py)."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import stack as launcher  # noqa: E402

import comparison_samples  # noqa: E402
from sample_data import write_samples, write_stac_sample  # noqa: E402


def built_once(tmp_path_factory: pytest.TempPathFactory, name: str, build: Callable[[Path], None]) -> Path:
    """A folder that `build` fills, made once per `pytest` command however many xdist workers ask for it: the
    first under a file lock, the others wait for it (the pattern of pytest-xdist's documentation, "Making
    session-scoped fixtures execute only once"). Read it, or copy it where a test may write."""
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the workers' temporary folders share this parent
    folder, done = root / f"built-{name}", root / f"built-{name}.done"
    with FileLock(str(root / f"built-{name}.lock")):
        if not done.exists():
            shutil.rmtree(folder, ignore_errors=True)  # what a worker that failed midway left
            folder.mkdir()
            build(folder)
            done.touch()
    return folder


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Stack:
    """The running local stack: `make run`'s own launcher, on free ports and temp folders."""

    api_url: str
    dagster_url: str
    data_root: Path
    artifact_root: Path
    home: Path
    log: Path
    process: subprocess.Popen[bytes]
    model_server_url: str = ""
    models_root: Path = Path()

    def client(self, **kwargs) -> httpx.Client:
        return httpx.Client(base_url=self.api_url, timeout=30, **kwargs)

    def wait_for_run(self, run_id: str, timeout_s: float = 60) -> dict:
        """Poll GET /runs/{id} until the run ends; return the last answer."""
        deadline = time.monotonic() + timeout_s
        with self.client() as client:
            while time.monotonic() < deadline:
                body = client.get(f"/runs/{run_id}").json()
                if body.get("run_status") in ("SUCCESS", "FAILURE", "CANCELED"):
                    return body
                time.sleep(0.2)
        raise AssertionError(f"run {run_id} did not end in {timeout_s} s; last answer {body}\n{self.log_tail()}")

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def fetch(self, url: str) -> bytes:
        """A file a run's results link to, fetched from the gateway as a user would."""
        assert url.startswith(self.api_url + "/runs/"), f"{url!r} is not a gateway URL"
        with self.client() as client:
            answer = client.get(url)
        assert answer.status_code == 200, answer.text
        return answer.content


def start_stack(base: Path, extra_env: dict[str, str] | None = None) -> Stack:
    api_port, dagster_port, grpc_port, model_port = free_port(), free_port(), free_port(), free_port()
    data_root, artifact_root, home = base / "data", base / "artifacts", base / "dagster_home"
    write_samples(data_root)
    # What `make run` writes for the comparisons (their tables live in the `samples` database).
    comparison_samples.write_files(data_root)
    write_stac_sample(data_root)  # the sample satellite scene and its STAC catalog (sample_dags.txt)
    env = {
        **os.environ,
        "CONSTELLATION_API_PORT": str(api_port),
        "CONSTELLATION_DAGSTER_PORT": str(dagster_port),
        "CONSTELLATION_GRPC_PORT": str(grpc_port),
        "CONSTELLATION_DATA_ROOT": str(data_root),
        "CONSTELLATION_ARTIFACT_ROOT": str(artifact_root),
        "CONSTELLATION_OUTPUT_ROOT": str(base / "outputs"),
        "CONSTELLATION_MODEL_SERVER_PORT": str(model_port),
        "CONSTELLATION_MODEL_SERVER_URL": f"http://127.0.0.1:{model_port}",
        "CONSTELLATION_URL_ALLOW_PRIVATE": "true",  # the tests serve files from 127.0.0.1
        "DAGSTER_HOME": str(home),
        **(extra_env or {}),
    }
    log = base / "stack.log"
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, str(ROOT / "scripts" / "stack.py")], env=env, stdout=sink, stderr=subprocess.STDOUT
        )
    stack = Stack(
        f"http://127.0.0.1:{api_port}",
        f"http://127.0.0.1:{dagster_port}",
        data_root,
        artifact_root,
        home,
        log,
        process,
        model_server_url=env["CONSTELLATION_MODEL_SERVER_URL"],
        models_root=Path(env.get("CONSTELLATION_MODELS_ROOT", ".")),
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the stack exited with {process.returncode}:\n{stack.log_tail()}")
        try:
            if httpx.get(stack.api_url + "/health", timeout=2).status_code == 200:
                return stack
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_stack(stack)
    raise RuntimeError(f"the stack did not become healthy in 120 s:\n{stack.log_tail()}")


def stop_stack(stack: Stack, sig: int = signal.SIGTERM) -> int:
    if stack.process.poll() is None:
        stack.process.send_signal(sig)
    try:
        return stack.process.wait(30)
    except subprocess.TimeoutExpired:
        stack.process.kill()
        return stack.process.wait()


def separate_processes_env(base: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    """`make run`'s environment on free ports and folders under `base`, with no model server."""
    return launcher.stack_env(
        {
            **os.environ,
            "CONSTELLATION_API_PORT": str(free_port()),
            "CONSTELLATION_DAGSTER_PORT": str(free_port()),
            "CONSTELLATION_GRPC_PORT": str(free_port()),
            "CONSTELLATION_MODEL_SERVER_PORT": str(free_port()),
            # No model server: these pipelines use none, and nothing listens there.
            "CONSTELLATION_MODEL_SERVER_URL": f"http://127.0.0.1:{free_port()}",
            "CONSTELLATION_DATA_ROOT": str(base / "data"),
            "CONSTELLATION_ARTIFACT_ROOT": str(base / "artifacts"),
            "CONSTELLATION_OUTPUT_ROOT": str(base / "outputs"),
            "DAGSTER_HOME": str(base / "dagster_home"),
            **(extra or {}),
        }
    )


class Processes:
    """`make run`'s processes minus the model server, each startable and stoppable on its own."""

    def __init__(self, env: dict[str, str], log: Path):
        self.env, self.log = env, log
        self.commands = launcher.stack_commands(env)
        self.ports = launcher.stack_ports(env)
        self.children: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str) -> None:
        with self.log.open("ab") as sink:
            child = self.children[name] = launcher.launch(self.commands[name], self.env, output=sink)
        if name != "daemon" and not launcher.wait_for_port("127.0.0.1", self.ports[name], child, timeout_s=60):
            raise RuntimeError(f"{name} did not start:\n{self.log_tail()}")

    def start_all(self) -> None:
        """The code server, the webserver, the daemon and the gateway, in the order `make run` starts them."""
        for name in ("code server", "webserver", "daemon", "gateway"):
            self.start(name)

    def as_stack(self) -> Stack:
        """The running processes seen as a Stack (its `process` is the gateway's)."""
        env = self.env
        return Stack(
            f"http://127.0.0.1:{env['CONSTELLATION_API_PORT']}",
            env["CONSTELLATION_DAGSTER_URL"],
            Path(env["CONSTELLATION_DATA_ROOT"]),
            Path(env["CONSTELLATION_ARTIFACT_ROOT"]),
            Path(env["DAGSTER_HOME"]),
            self.log,
            self.children["gateway"],
        )

    def stop(self, name: str) -> None:
        launcher.stop_all([self.children.pop(name)])

    def stop_everything(self) -> None:
        launcher.stop_all(self.children.values())
        self.children.clear()

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The machine's network is closed: no background requests, no first-run work.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextmanager
def small_tmpfs(root: Path, size: str) -> Iterator[Path]:
    """A real filesystem of `size` (tmpfs, e.g. "256k") mounted over `root` until the block ends.

    It needs root (CAP_SYS_ADMIN), as CI has; elsewhere the test is skipped. A loop-mounted file would
    need the same privilege; a quota needs root and a quota-enabled filesystem.
    """
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(root)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"mounting a small tmpfs needs root (CAP_SYS_ADMIN): {mounted.stderr.strip()}")
    try:
        yield root
    finally:
        if subprocess.run(["umount", str(root)]).returncode != 0:
            subprocess.run(["umount", "--lazy", str(root)], check=True)


def local_pipeline(path: str = "samples", width: int = 32) -> dict:
    """resize_image(dict_to_list(import_from_local(path))): three nested instructions."""
    imported = {"operation": "import_from_local", "parameters": {"path": path}}
    listed = {"operation": "dict_to_list", "parameters": {"data": imported}}
    return {
        "instructions": [{"operation": "resize_image", "parameters": {"data": listed, "width": width, "height": width}}]
    }


CLI = Path(sys.executable).parent / "constellation"


def cli_env(url: str, token: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CONSTELLATION_API_TOKEN", "COLUMNS")}
    env.update(CONSTELLATION_URL=url, COLUMNS="200")
    if token is not None:
        env["CONSTELLATION_API_TOKEN"] = token
    return env


def cli(url: str, *args: str, stdin: str | None = None, token: str | None = None) -> subprocess.CompletedProcess[str]:
    """The `constellation` command, run as installed, against the gateway at `url`."""
    return subprocess.run(
        [str(CLI), *args], input=stdin, env=cli_env(url, token), capture_output=True, text=True, timeout=90
    )


def write_geotiff(
    path: Path,
    data: Any,
    transform: Any,
    crs: str | Any = "EPSG:32633",
    nodata: float | None = None,
    mask: Any = None,
) -> Path:
    """`data` (bands × rows × columns, or one band's rows × columns) as a GeoTIFF of its dtype; `mask`, when
    given, its internal mask (0 not valid, 255 valid)."""
    import rasterio

    data = data if data.ndim == 3 else data[None]
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = {"driver": "GTiff", "width": data.shape[2], "height": data.shape[1], "count": data.shape[0]}
    with rasterio.open(path, "w", **profile, dtype=data.dtype, crs=crs, transform=transform, nodata=nodata) as out:
        out.write(data)
        if mask is not None:
            out.write_mask(mask)
    return path


def asgi_post(
    app: Any, path: str, headers: list[tuple[bytes, bytes]], chunks: list[bytes], then_gone: bool = False
) -> tuple[int, dict[str, Any]]:
    """The status and JSON `app` answers to a POST of `path` with these raw headers and body chunks, called as an
    ASGI server would (with `then_gone`, the client goes after them, before the rest of the body it declared)."""
    import json

    import anyio

    messages: list[dict[str, Any]] = [
        {"type": "http.request", "body": chunk, "more_body": then_gone or i < len(chunks) - 1}
        for i, chunk in enumerate(chunks)
    ]
    answered: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        answered.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"localhost"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": {},
    }
    anyio.run(app, scope, receive, send)
    start = next(m for m in answered if m["type"] == "http.response.start")
    body = b"".join(m.get("body", b"") for m in answered if m["type"] == "http.response.body")
    return start["status"], json.loads(body)
