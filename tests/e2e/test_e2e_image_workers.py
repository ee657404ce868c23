"""The image ops' worker processes inside a real run worker: they work, and a cancel stops them."""

from __future__ import annotations

import io
import os
import time
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image

from harness import Stack, local_pipeline

pytestmark = pytest.mark.e2e


def photos(folder: Path, count: int, size: tuple[int, int]) -> None:
    """`count` JPEGs: one encoded, the rest hard links to it under other names."""
    folder.mkdir(parents=True, exist_ok=True)
    first = folder / "p0000.jpg"
    if not first.exists():
        Image.linear_gradient("L").resize(size).convert("RGB").save(first, quality=90)
    for i in range(1, count):
        if not (folder / f"p{i:04d}.jpg").exists():
            os.link(first, folder / f"p{i:04d}.jpg")


def image_workers(stack: Stack) -> list[psutil.Process]:
    """Forked children of a run worker: processes of the stack whose parent runs the same command line."""
    found = []
    for process in psutil.Process(stack.process.pid).children(recursive=True):
        try:
            parent = process.parent()
            if parent is not None and parent.pid != stack.process.pid and process.cmdline() == parent.cmdline():
                found.append(process)
        except psutil.Error:
            continue
    return found


def test_a_long_list_is_resized_on_worker_processes_inside_the_run(stack: Stack, api: httpx.Client):
    photos(stack.data_root / "many", 48, (640, 480))
    launched = api.post("/execute", json=local_pipeline(path="many", width=40)).json()
    run = stack.wait_for_run(launched["run_id"], timeout_s=120)
    assert run["run_status"] == "SUCCESS", run
    [result] = api.get(f"/runs/{run['run_id']}/results").json()["results"]
    files = result["output"]["files"]
    assert [f["name"] for f in files] == [f"p{i:04d}.jpg" for i in range(48)]
    for item in files[::12]:
        assert Image.open(io.BytesIO(stack.fetch(item["uri"]))).size == (40, 40)


def test_cancelling_a_run_stops_its_image_workers(stack: Stack, api: httpx.Client):
    photos(stack.data_root / "large", 300, (1600, 1200))  # about 0.1 s each to resize to 1200×900
    run_id = api.post("/execute", json=local_pipeline(path="large", width=1200)).json()["run_id"]
    deadline = time.monotonic() + 120
    # the pool starts its workers one after another: wait for two, not for the first
    while len(workers := image_workers(stack)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert len(workers) >= 2, api.get(f"/runs/{run_id}").json()
    assert api.post(f"/runs/{run_id}/cancel").status_code == 200
    run = stack.wait_for_run(run_id, timeout_s=60)
    assert run["run_status"] == "CANCELED", run
    _, alive = psutil.wait_procs(workers, timeout=10)
    assert alive == []
