"""`make run`'s launcher: Ctrl-C stops every process it started."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import psutil
import pytest

from harness import start_stack, stop_stack

pytestmark = pytest.mark.e2e


def test_ctrl_c_stops_every_process(tmp_path: Path):
    stack = start_stack(tmp_path)
    deadline = time.monotonic() + 90  # the gateway answers first; the banner waits for the model server
    while "Ctrl-C stops everything." not in stack.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.5)
    said = stack.log.read_text()  # `make run` says where it serves, on the ports it was given
    assert f"  gateway   {stack.api_url}  (docs at {stack.api_url}/docs)" in said, stack.log_tail()
    assert f"  Dagster   {stack.dagster_url}  (main@constellation)" in said
    assert f"  command line: export CONSTELLATION_URL={stack.api_url}" in said
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
