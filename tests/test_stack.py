"""`make run`'s launcher: Ctrl-C stops every process it started."""

from __future__ import annotations

import signal
import socket
from pathlib import Path

import psutil
import pytest

from conftest import start_stack, stop_stack

pytestmark = pytest.mark.e2e


def test_ctrl_c_stops_every_process(tmp_path: Path):
    stack = start_stack(tmp_path)
    launcher = psutil.Process(stack.process.pid)
    children = launcher.children(recursive=True)
    names = " ".join(" ".join(c.cmdline()) for c in children)
    assert all(word in names for word in ("api grpc", "dagster-webserver", "dagster-daemon", "uvicorn", "model_server"))
    assert stop_stack(stack, signal.SIGINT) == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, f"still running after Ctrl-C: {[p.cmdline() for p in alive]}"
    for url in (stack.api_url, stack.dagster_url):
        port = int(url.rsplit(":", 1)[1])
        with socket.socket() as sock:
            assert sock.connect_ex(("127.0.0.1", port)) != 0, f"port {port} still open"
