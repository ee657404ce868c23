"""One model of three does not load: on the real stack, the other two are still compared, and the results, the
report and `constellation results` name the one that failed; the run itself fails."""

from __future__ import annotations

import copy
import json
import re

import httpx
import pytest
from test_e2e_compare import check_classification, db_rows

from harness import Stack, cli
from samples import sample_with

pytestmark = pytest.mark.e2e

BROKEN = "fire-risk-broken"


def with_a_broken_third_model(stack: Stack) -> dict:
    """The sample comparing two tabular classifiers, with a third whose model file is not a model."""
    (stack.models_root / f"{BROKEN}.onnx").write_bytes(b"this is not an ONNX model\n" * 40)
    body = copy.deepcopy(sample_with('"fire-risk-tree"', "compare_models"))
    instructions = body["instructions"]
    deploys = [i for i in instructions if i["operation"] == "deploy_model"]
    [compare] = [i for i in instructions if i["operation"] == "compare_models"]
    third = copy.deepcopy(compare["parameters"]["results"][0])
    third["parameters"]["model"] = BROKEN
    compare["parameters"]["results"].insert(1, third)
    broken = copy.deepcopy(deploys[0])
    broken["parameters"].update(model=BROKEN, source=f"{BROKEN}.onnx")
    instructions.insert(instructions.index(compare), broken)
    return body


def test_the_two_models_that_ran_are_compared_and_the_broken_one_named(stack: Stack, api: httpx.Client):
    body = with_a_broken_third_model(stack)
    deploy_at = (
        f"/instructions/{next(i for i, x in enumerate(body['instructions']) if x['parameters'].get('model') == BROKEN)}"
    )
    launched = api.post("/execute", json=body)
    assert launched.status_code == 200, launched.text  # a model file that exists passes the checks before launch
    run = stack.wait_for_run(launched.json()["run_id"], timeout_s=180)
    assert run["run_status"] == "FAILURE", run  # something failed: the run says so
    assert run["error"]["path"] == deploy_at and run["error"]["operation"] == "deploy_model"

    answer = api.get(f"/runs/{run['run_id']}/results")
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    [deploy] = [r for r in results if r["path"] == deploy_at]
    assert deploy["state"] == "failed" and BROKEN in deploy["error"]
    [comparison] = [r["output"] for r in results if r["operation"] == "compare_models"]
    assert [m["model"] for m in comparison["models"]] == ["fire-risk-logreg", "fire-risk-tree"]
    [failed] = comparison["failed_models"]
    assert failed["model"] == BROKEN
    assert failed["path"].endswith("/parameters/results/1")
    assert failed["error"].startswith(f"not run: it needs model '{BROKEN}', which deploy_model at {deploy_at} did not")
    assert BROKEN in comparison["verdict"]
    # The two that ran are compared as they would be alone: scikit-learn's and SciPy's figures on their predictions.
    folder = stack.artifact_root / "runs" / run["run_id"] / "nodes"
    predictions = {d["model"]: d for d in (json.loads(p.read_text()) for p in folder.glob("*/predictions.json"))}
    assert sorted(predictions) == ["fire-risk-logreg", "fire-risk-tree"]
    check_classification(comparison, predictions, {r["name"]: r["risk"] for r in db_rows("fire_risk")})

    page = api.get(f"/runs/{run['run_id']}/report")
    assert page.status_code == 200, page.text
    failed_section = re.search(r'<section id="failed-models">(.*?)</section>', page.text, re.S)
    assert failed_section and BROKEN in failed_section.group(1) and deploy_at in failed_section.group(1)
    assert "Comparison of 2 models" in page.text

    shown = cli(stack.api_url, "results", run["run_id"])
    assert re.search(rf"^\s*{BROKEN}\s+not run: it needs model", shown.stdout, re.M), shown.stdout
    for model in ("fire-risk-logreg", "fire-risk-tree"):  # a row each: the accuracy and its 95% interval
        assert re.search(rf"^{model}\s+\d\.\d{{3}} \[\d\.\d{{3}}, \d\.\d{{3}}\]", shown.stdout, re.M), shown.stdout


def test_a_model_that_fails_as_it_runs_is_left_out_too(stack: Stack, api: httpx.Client):
    """The third model loads but cannot run on what it is given (three features for a model of four)."""
    body = copy.deepcopy(sample_with('"fire-risk-tree"', "compare_models"))
    instructions = body["instructions"]
    [compare] = [i for i in instructions if i["operation"] == "compare_models"]
    narrow = copy.deepcopy(compare["parameters"]["results"][0])
    narrow["parameters"].update(model="fire-risk-narrow", features=["temperature", "humidity", "wind"])
    compare["parameters"]["results"].append(narrow)
    deploy = copy.deepcopy(next(i for i in instructions if i["operation"] == "deploy_model"))
    deploy["parameters"]["model"] = "fire-risk-narrow"  # the logistic regression's file, under another name
    instructions.insert(instructions.index(compare), deploy)
    run = stack.wait_for_run(api.post("/execute", json=body).json()["run_id"], timeout_s=180)
    assert run["run_status"] == "FAILURE", run
    at = f"/instructions/{instructions.index(compare)}/parameters/results/2"
    assert run["error"]["path"] == at and run["error"]["operation"] == "model_inference", run["error"]
    results = api.get(f"/runs/{run['run_id']}/results").json()["results"]
    [comparison] = [r["output"] for r in results if r["operation"] == "compare_models"]
    assert [m["model"] for m in comparison["models"]] == ["fire-risk-logreg", "fire-risk-tree"]
    [failed] = comparison["failed_models"]
    assert failed["model"] == "fire-risk-narrow" and failed["path"] == at
    assert failed["error"] == run["error"]["message"]  # what the model said, as the run's error says it
    assert "state" not in next(r for r in results if r["operation"] == "compare_models")
