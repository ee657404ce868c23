"""The history of comparisons through the real stack: fingerprints, GET /comparisons, the leaderboard, the CLI,
a report that links the earlier comparison of the same data, and a champion gate that fails a run after its
report is written.

Two image classifiers are compared on a copy of the sample images three times; before the third run one
input changes (one pixel), so its fingerprint differs and the leaderboard says the data changed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from PIL import Image

from harness import Stack

pytestmark = pytest.mark.e2e
FOLDER = "history-samples"
DATASET = f"local/{FOLDER}"
CLI = Path(sys.executable).parent / "constellation"


def pipeline(**compare: object) -> dict:
    def inference(model: str) -> dict:
        data = {"operation": "import_from_local", "parameters": {"path": FOLDER}}
        return {"operation": "model_inference", "parameters": {"model": model, "batch_size": 4, "data": data}}

    return {
        "instructions": [
            {"operation": "deploy_model", "parameters": {"model": "fire-vit-a"}},
            {"operation": "deploy_model", "parameters": {"model": "fire-vit-b"}},
            {
                "operation": "compare_models",
                "parameters": {"results": [inference("fire-vit-a"), inference("fire-vit-b")], **compare},
            },
        ]
    }


def run(stack: Stack, api: httpx.Client, body: dict) -> dict:
    answer = api.post("/execute", json=body)
    assert answer.status_code == 200, answer.text
    return stack.wait_for_run(answer.json()["run_id"], timeout_s=240)


def comparison_of(api: httpx.Client, run_id: str) -> dict:
    results = api.get(f"/runs/{run_id}/results").json()["results"]
    return next(r["output"] for r in results if r["operation"] == "compare_models")


def test_history_leaderboard_and_gate_through_the_stack(stack: Stack, api: httpx.Client):
    shutil.copytree(stack.data_root / "samples", stack.data_root / FOLDER)
    first = run(stack, api, pipeline())
    second = run(stack, api, pipeline())
    assert first["run_status"] == second["run_status"] == "SUCCESS", (first, second)
    one, two = comparison_of(api, first["run_id"]), comparison_of(api, second["run_id"])
    assert one["dataset_fingerprint"].startswith("sha256:") and one["fingerprint_of"] == "files"
    assert two["dataset_fingerprint"] == one["dataset_fingerprint"]
    # every class's score came back: the classifiers' score metrics exist
    assert all(m["roc_auc"] is not None and m["ece"] is not None for m in two["models"])

    # the second report links the first comparison of the same data (other tests may have compared the same
    # pictures under samples/: the same bytes, so the same data, listed too)
    assert [e["run_id"] for e in two["earlier"] if e["dataset"] == DATASET] == [first["run_id"]]
    assert all(e["fingerprint"] == one["dataset_fingerprint"] for e in two["earlier"])
    page = api.get(f"/runs/{second['run_id']}/report").text
    assert f'href="../{first["run_id"]}/report?path=/instructions/2"' in page
    assert one["dataset_fingerprint"] in page

    changed = stack.data_root / FOLDER / "Fire" / "fire_0.jpg"
    with Image.open(changed) as image:
        image = image.copy()
    image.putpixel((0, 0), (0, 0, 0))
    image.save(changed, quality=95)
    third = run(stack, api, pipeline(baseline="fire-vit-a", gate={"accuracy": {"min_delta": -1.0}}))
    assert third["run_status"] == "SUCCESS", third
    three = comparison_of(api, third["run_id"])
    assert three["dataset_fingerprint"] != one["dataset_fingerprint"] and three["earlier"] == []
    challenger = next(m for m in three["models"] if m["model"] == "fire-vit-b")
    assert challenger["gate"]["passed"] and three["gate"]["passed"] == ["fire-vit-b"]

    listed = api.get("/comparisons", params={"dataset": DATASET}).json()
    assert [c["run_id"] for c in listed["comparisons"]] == [third["run_id"], second["run_id"], first["run_id"]]
    assert listed["next_cursor"] is None
    assert listed["comparisons"][0]["report_url"] == f"/runs/{third['run_id']}/report?path=/instructions/2"
    page_one = api.get("/comparisons", params={"dataset": DATASET, "limit": 2}).json()
    page_two = api.get(
        "/comparisons", params={"dataset": DATASET, "limit": 2, "cursor": page_one["next_cursor"]}
    ).json()
    assert [c["run_id"] for c in page_one["comparisons"] + page_two["comparisons"]] == [
        third["run_id"],
        second["run_id"],
        first["run_id"],
    ] and page_two["next_cursor"] is None
    same = api.get("/comparisons", params={"fingerprint": one["dataset_fingerprint"]}).json()["comparisons"]
    assert [c["run_id"] for c in same if c["dataset"] == DATASET] == [second["run_id"], first["run_id"]]
    assert all(c["fingerprint"] == one["dataset_fingerprint"] for c in same)

    board = api.get("/comparisons/leaderboard", params={"dataset": DATASET}).json()
    assert board["fingerprint"] == three["dataset_fingerprint"] and board["data_changed"] is True
    assert [(f["fingerprint"], f["comparisons"]) for f in board["fingerprints"]] == [
        (three["dataset_fingerprint"], 1),
        (one["dataset_fingerprint"], 2),
    ]
    assert board["metric"] == "accuracy"
    newest = sorted(three["models"], key=lambda m: -m["accuracy"])
    rows = board["models"]
    assert [(r["model"], r["value"], r["ci"], r["same_data"]) for r in rows[:2]] == [
        (m["model"], m["accuracy"], m["accuracy_ci"], True) for m in newest
    ]
    assert {r["model"] for r in rows[2:]} == {"fire-vit-a", "fire-vit-b"}
    assert all(not r["same_data"] and r["comparisons"] == 2 and r["run_id"] == second["run_id"] for r in rows[2:])

    env = {**os.environ, "CONSTELLATION_URL": stack.api_url, "COLUMNS": "200"}
    env.pop("CONSTELLATION_API_TOKEN", None)
    shown = subprocess.run([str(CLI), "leaderboard", DATASET], env=env, capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "the data changed: 2 fingerprints" in shown.stderr and three["dataset_fingerprint"] in shown.stderr
    lines = [line for line in shown.stdout.splitlines() if "fire-vit-" in line]
    assert len(lines) == 4 and all("other data" in line for line in lines[2:]) and "other data" not in lines[0]
    as_json = subprocess.run(
        [str(CLI), "leaderboard", DATASET, "--json"], env=env, capture_output=True, text=True, timeout=60
    )
    assert json.loads(as_json.stdout)["models"] == rows

    # a gate no challenger passes, with fail_on_gate: the run fails after its report is written
    gated = run(stack, api, pipeline(baseline="fire-vit-a", gate={"accuracy": {"min_delta": 0.5}}, fail_on_gate=True))
    assert gated["run_status"] == "FAILURE"
    error = gated["error"]
    assert error["path"] == "/instructions/2" and "no challenger passes" in error["message"]
    assert "fire-vit-b accuracy" in error["message"]
    report = error["message"].split("The report: ")[1].split(" ")[0]
    answer = api.get(f"/runs/{gated['run_id']}/files/{report}")
    assert answer.status_code == 200 and "Champion gate (baseline fire-vit-a)" in answer.text
