"""Resuming a failed run through the gateway (the same re-execution as the Dagster UI's *from failure*)."""

from __future__ import annotations

import base64
import io
import json
import os
import pickle
import shutil
import struct
import time
from pathlib import Path

import httpx
import pytest
from PIL import Image

from harness import Stack

pytestmark = pytest.mark.e2e


def pipeline(folder: str) -> dict:
    def resized(path: str, width: int) -> dict:
        return {
            "operation": "resize_image",
            "parameters": {
                "width": width,
                "height": width,
                "data": {
                    "operation": "dict_to_list",
                    "parameters": {"data": {"operation": "import_from_local", "parameters": {"path": path}}},
                },
            },
        }

    return {"instructions": [resized("samples", 40), resized(folder, 20)]}


def test_a_resumed_run_reuses_what_succeeded_and_finishes(stack: Stack, api: httpx.Client):
    folder = f"arrives-later-{time.time_ns()}"
    (stack.data_root / folder).mkdir()  # there, but empty: the launch is checked, the run fails
    failed = stack.wait_for_run(api.post("/execute", json=pipeline(folder)).json()["run_id"])
    assert failed["run_status"] == "FAILURE" and folder in failed["error"]["message"]
    # the missing data arrives
    shutil.copytree(stack.data_root / "samples" / "Fire", stack.data_root / folder, dirs_exist_ok=True)

    answer = api.post(f"/runs/{failed['run_id']}/retry")
    assert answer.status_code == 200, answer.text
    retried = answer.json()
    assert retried["status"] == "success" and retried["parent_run_id"] == failed["run_id"]
    run = stack.wait_for_run(retried["run_id"])
    assert run["run_status"] == "SUCCESS", run
    states = {i["path"]: i["state"] for i in run["instructions"]}
    assert states["/instructions/0"] == "reused"
    assert states["/instructions/0/parameters/data/parameters/data"] == "reused"
    assert states["/instructions/1"] == "succeeded"
    first, second = api.get(f"/runs/{run['run_id']}/results").json()["results"]
    assert first["output"]["count"] == 12 and second["output"]["count"] == 4
    assert all(stack.fetch(f["uri"]) for f in first["output"]["files"]), "reused files are still served"


def test_only_a_failed_run_can_be_resumed(stack: Stack, api: httpx.Client):
    done = stack.wait_for_run(api.post("/execute", json=pipeline("samples")).json()["run_id"])
    assert done["run_status"] == "SUCCESS"
    refused = api.post(f"/runs/{done['run_id']}/retry")
    assert refused.status_code == 409 and "only a failed or cancelled run" in refused.json()["message"]
    assert api.post("/runs/00000000-0000-4000-8000-000000000000/retry").status_code == 404


class Planted:
    """Unpickled, it writes a marker file: proof that a retry executed what a user sent."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def bmp_and_pickle(marker: Path) -> bytes:
    """A valid BMP that is also a valid pickle: "BM" + the file size read as BINBYTES, skipping the image."""
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 30, 30)).save(out, format="BMP")
    data = bytearray(out.getvalue())
    while (len(data) - 5) % 256 != ord("M"):  # the size's first byte is the "M" of "BM"
        data.append(0)
    data[1:5] = struct.pack("<I", len(data) - 5)
    return bytes(data) + b"0" + pickle.dumps(Planted(marker), protocol=2)  # "0": drop the skipped bytes


def test_a_retry_never_executes_a_file_an_instruction_wrote(stack: Stack, api: httpx.Client, tmp_path: Path):
    """table_to_images names each file from the table: a row named output.pickle (a BMP and a pickle at
    once) lands in the node folder, the next row fails the run; its retry must not unpickle it."""
    marker = tmp_path / "executed"
    polyglot = bmp_and_pickle(marker)
    assert Image.open(io.BytesIO(polyglot)).format == "BMP"
    name = f"planted-{time.time_ns()}.jsonl"
    rows = [
        {"name": "output.pickle", "image": base64.b64encode(polyglot).decode()},
        {"name": "later", "image": base64.b64encode(b"not an image").decode()},
    ]
    (stack.data_root / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    pipeline = {
        "instructions": [
            {
                "operation": "table_to_images",
                "parameters": {
                    "image_column": "image",
                    "name_column": "name",
                    "data": {
                        "operation": "read_table",
                        "parameters": {"data": {"operation": "import_from_local", "parameters": {"path": name}}},
                    },
                },
            }
        ]
    }

    failed = stack.wait_for_run(api.post("/execute", json=pipeline).json()["run_id"])
    assert failed["run_status"] == "FAILURE" and "row 2" in failed["error"]["message"], failed
    planted = stack.artifact_root.glob(f"runs/{failed['run_id']}/nodes/*/output.pickle")
    assert any(p.read_bytes() == polyglot for p in planted), "the row's file is where outputs used to be kept"

    answer = api.post(f"/runs/{failed['run_id']}/retry")
    assert answer.status_code == 200, answer.text
    run = stack.wait_for_run(answer.json()["run_id"])
    assert not marker.exists(), "the retry executed a pickle written by an instruction"
    states = {i["path"]: i["state"] for i in run["instructions"]}
    assert states["/instructions/0"] == "failed", "table_to_images ran again (and fails on row 2 again)"
    assert states["/instructions/0/parameters/data"] == "reused", "what succeeded is still reused"
    assert run["run_status"] == "FAILURE" and "row 2" in run["error"]["message"]


def test_a_retry_is_checked_like_a_launch(stack: Stack, api: httpx.Client):
    """What the server knows is asked again when a run is resumed: data gone since is refused at its pointer."""
    folder = f"goes-away-{time.time_ns()}"
    (stack.data_root / folder).mkdir()  # there, but empty: the run fails
    failed = stack.wait_for_run(api.post("/execute", json=pipeline(folder)).json()["run_id"])
    assert failed["run_status"] == "FAILURE"
    (stack.data_root / folder).rmdir()
    answer = api.post(f"/runs/{failed['run_id']}/retry")
    assert answer.status_code == 422, answer.text
    [error] = answer.json()["errors"]
    assert error["path"] == "/instructions/1/parameters/data/parameters/data/parameters/path"
    assert error["message"] == f"path {folder!r} does not exist under the data root"
