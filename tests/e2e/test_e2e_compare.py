"""Every comparison in sample_dags.txt, on the real stack, checked against the libraries' own numbers.

Each test runs one sample pipeline verbatim, reads each model's predictions from the run's
files and the ground truth from where the sample keeps it, and recomputes the headline
figures directly with scikit-learn, SciPy or pycocotools.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from scipy.stats import binomtest
from sklearn.metrics import accuracy_score, cohen_kappa_score, confusion_matrix, f1_score, mean_squared_error

import comparison_samples
from harness import Stack
from samples import sample_with

pytestmark = pytest.mark.e2e


def run_sample(stack: Stack, api: httpx.Client, *needles: str) -> tuple[dict, dict, dict[str, dict]]:
    """Run a sample; return the run, its comparison output, and each model's predictions file."""
    run = stack.wait_for_run(api.post("/execute", json=sample_with(*needles)).json()["run_id"], timeout_s=180)
    assert run["run_status"] == "SUCCESS", run
    results = api.get(f"/runs/{run['run_id']}/results").json()["results"]
    [comparison] = [r["output"] for r in results if r["operation"] == "compare_models"]
    folder = stack.artifact_root / "runs" / run["run_id"] / "nodes"
    predictions = {d["model"]: d for d in (json.loads(p.read_text()) for p in folder.glob("*/predictions.json"))}
    return run, comparison, predictions


def entry(comparison: dict, model: str) -> dict:
    return next(m for m in comparison["models"] if m["model"] == model)


def top1(document: dict) -> dict[str, str]:
    return {p["name"]: p["labels"][0] for p in document["predictions"]}


def db_rows(table: str) -> list[dict]:
    """The rows the sample database holds in `table` (written by the same functions)."""
    return {
        "fire_risk": lambda: comparison_samples.fire_risk_rows(200, seed=2),
        "fire_reports": comparison_samples.report_rows,
    }[table]()


def check_classification(comparison: dict, predictions: dict[str, dict], truth: dict[str, str]) -> None:
    """Accuracy, macro-F1, kappa and the exact McNemar p, as scikit-learn and SciPy compute them."""
    names = sorted(truth)
    predicted = {m: [top1(d)[n].lower() for n in names] for m, d in predictions.items()}
    expected = [truth[n].lower() for n in names]
    for model, labels in predicted.items():
        got = entry(comparison, model)
        assert got["accuracy"] == pytest.approx(accuracy_score(expected, labels))
        assert got["macro_f1"] == pytest.approx(f1_score(expected, labels, average="macro", zero_division=0), abs=1e-9)
        low, high = got["accuracy_ci"]
        assert 0 <= low <= got["accuracy"] <= high <= 1
        assert np.asarray(got["confusion"]["matrix"]).sum() == len(names)
    [pair] = comparison["pairs"]
    a, b = pair["models"]
    same = [x == y for x, y in zip(predicted[a], predicted[b], strict=True)]
    assert pair["agreement"] == pytest.approx(np.mean(same))
    assert pair["kappa"] == pytest.approx(cohen_kappa_score(predicted[a], predicted[b]), abs=1e-9) or (
        np.isnan(cohen_kappa_score(predicted[a], predicted[b])) and pair["kappa"] is None
    )
    only_a = sum(x == t != y for x, y, t in zip(predicted[a], predicted[b], expected, strict=True))
    only_b = sum(y == t != x for x, y, t in zip(predicted[a], predicted[b], expected, strict=True))
    reference = binomtest(only_a, only_a + only_b, 0.5).pvalue if only_a + only_b else 1.0
    assert pair["mcnemar_p"] == pytest.approx(reference)
    assert comparison["verdict"] and any(m in comparison["verdict"] for m in predicted)


def test_two_image_classifiers_on_class_folders(stack: Stack, api: httpx.Client):
    run, comparison, predictions = run_sample(stack, api, '"fire-vit-b"', "compare_models")
    assert comparison["labelled"] and comparison["inputs"] == 90  # data/fire-photos: 30 pictures of each class
    truth = {n: n.split("/")[0] for n in top1(next(iter(predictions.values())))}
    check_classification(comparison, predictions, truth)
    assert all(entry(comparison, m)["throughput_per_s"] > 0 for m in predictions)
    imports = [i for i in run["instructions"] if i["operation"] == "import_from_local"]
    assert len(imports) == 1 and len(imports[0]["also_at"]) == 1, "one import feeds both models"


def test_zero_shot_against_a_fine_tuned_classifier(stack: Stack, api: httpx.Client):
    _, comparison, predictions = run_sample(stack, api, '"fire-clip"', "compare_models")
    assert sorted(predictions) == ["fire-clip", "fire-vit-a"]
    assert {label for p in predictions["fire-clip"]["predictions"] for label in p["labels"]} <= {
        "Fire",
        "Normal",
        "Smoke",
    }
    truth = {n: n.split("/")[0] for n in top1(predictions["fire-clip"])}
    check_classification(comparison, predictions, truth)


def test_tabular_classifiers_on_rows_from_the_database(stack: Stack, api: httpx.Client):
    _, comparison, predictions = run_sample(stack, api, '"fire-risk-tree"', "compare_models")
    rows = db_rows("fire_risk")
    truth = {r["name"]: r["risk"] for r in rows}
    assert sorted(top1(predictions["fire-risk-logreg"])) == sorted(truth), "predictions keyed by the name column"
    check_classification(comparison, predictions, truth)
    # The server's answers are the model's own: run the same ONNX file in process on the same rows.
    import onnxruntime

    session = onnxruntime.InferenceSession(str(Path(stack.models_root) / "fire-risk-logreg.onnx"))
    features = np.array([[r[f] for f in ("temperature", "humidity", "wind", "drought")] for r in rows], np.float32)
    labels = session.run(None, {session.get_inputs()[0].name: features})[0]
    served = top1(predictions["fire-risk-logreg"])
    assert [served[r["name"]] for r in rows] == [str(x) for x in labels]
    # A real model on real ground truth beats a coin: the sample's logistic regression does.
    assert entry(comparison, "fire-risk-logreg")["accuracy"] > 0.7
    # Every class's score is kept (scores_all): the ROC AUC is scikit-learn's on the model's own probabilities
    # (classes high, low: the later, low, is the positive one, as scikit-learn takes it).
    from sklearn.metrics import roc_auc_score

    probabilities = session.run(None, {session.get_inputs()[0].name: features})[1]
    kept = {p["name"]: p["scores_all"] for p in predictions["fire-risk-logreg"]["predictions"]}
    served_scores = np.array([[kept[r["name"]][c] for c in ("high", "low")] for r in rows])
    assert np.allclose(served_scores, probabilities, atol=1e-6)
    assert comparison["scores"]["positive_class"] == "low"
    reference = roc_auc_score([r["risk"] == "low" for r in rows], probabilities[:, 1])
    assert entry(comparison, "fire-risk-logreg")["roc_auc"] == pytest.approx(reference)
    low, high = entry(comparison, "fire-risk-logreg")["roc_auc_ci"]
    assert low <= reference <= high


def test_tabular_regressors_on_a_csv_file(stack: Stack, api: httpx.Client):
    _, comparison, predictions = run_sample(stack, api, '"burned-area-forest"', "compare_models")
    rows = {r["name"]: r["burned_area"] for r in db_rows("fire_risk")}
    for model, document in predictions.items():
        values = {p["name"]: p["value"] for p in document["predictions"]}
        names = sorted(values)
        assert names == sorted(rows)
        got = entry(comparison, model)
        rmse = mean_squared_error([rows[n] for n in names], [values[n] for n in names]) ** 0.5
        assert got["rmse"] == pytest.approx(rmse, rel=1e-4)
        assert got["rmse_ci"][0] <= got["rmse"] <= got["rmse_ci"][1]
    [pair] = comparison["pairs"]
    assert 0 <= pair["p_value"] <= 1


def test_text_classifiers_on_a_text_column(stack: Stack, api: httpx.Client):
    _, comparison, predictions = run_sample(stack, api, '"report-classifier-b"', "compare_models")
    truth = {r["name"]: r["label"] for r in db_rows("fire_reports")}
    check_classification(comparison, predictions, truth)


def test_object_detectors_against_coco_boxes(stack: Stack, api: httpx.Client):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    _, comparison, predictions = run_sample(stack, api, '"box-detector-b"', "compare_models")
    truth = COCO(str(stack.data_root / "detection" / "coco.json"))
    ids = {img["file_name"]: img["id"] for img in truth.dataset["images"]}
    categories = {c["name"]: c["id"] for c in truth.dataset["categories"]}
    for model, document in predictions.items():
        found = [
            {
                "image_id": ids[p["name"]],
                "category_id": categories[d["label"]],
                "score": d["score"],
                "bbox": [d["box"][0], d["box"][1], d["box"][2] - d["box"][0], d["box"][3] - d["box"][1]],
            }
            for p in document["predictions"]
            for d in p["detections"]
            if d["label"] in categories
        ]
        expected_map = 0.0
        if found:
            evaluation = COCOeval(truth, truth.loadRes(found), "bbox")
            evaluation.evaluate(), evaluation.accumulate(), evaluation.summarize()
            expected_map = max(0.0, float(evaluation.stats[0]))
        assert entry(comparison, model)["map"] == pytest.approx(expected_map, abs=1e-6)


def test_segmenters_against_masks(stack: Stack, api: httpx.Client):
    _, comparison, predictions = run_sample(stack, api, '"patch-segmenter-b"', "compare_models")
    masks = stack.data_root / "segmentation" / "masks"
    for model, document in predictions.items():
        total = np.zeros((3, 3), dtype=np.int64)
        for p in document["predictions"]:
            predicted = np.asarray(Image.open(p["mask"]))
            true = np.asarray(Image.open(masks / Path(p["name"]).name))
            assert predicted.shape == true.shape
            total += confusion_matrix(true.ravel(), predicted.ravel(), labels=[0, 1, 2])
        iou = np.diag(total) / (total.sum(0) + total.sum(1) - np.diag(total))
        assert entry(comparison, model)["miou"] == pytest.approx(np.nanmean(iou), abs=1e-6)


def test_the_report_page_and_chart_are_served(stack: Stack, api: httpx.Client):
    run, comparison, _ = run_sample(stack, api, '"fire-vit-b"', "compare_models")
    page = api.get(f"/runs/{run['run_id']}/report")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert comparison["verdict"].split()[0] in page.text
    assert "http://" not in page.text and "https://" not in page.text, "the page needs nothing from outside"
    assert comparison["chart"].startswith(stack.api_url), "the chart is a gateway URL, never a server path"
    chart = Image.open(io.BytesIO(stack.fetch(comparison["chart"])))
    assert chart.format == "PNG" and chart.width > 200
    assert "file://" not in json.dumps(api.get(f"/runs/{run['run_id']}/results").json())


def test_unlabelled_images_are_compared_on_agreement_alone(stack: Stack, api: httpx.Client):
    body = sample_with('"fire-vit-b"', "compare_models")
    for result in body["instructions"][2]["parameters"]["results"]:
        result["parameters"]["data"]["parameters"]["path"] = "samples/Fire"  # no class folders below it
    run = stack.wait_for_run(api.post("/execute", json=body).json()["run_id"], timeout_s=120)
    assert run["run_status"] == "SUCCESS", run
    [comparison] = [
        r["output"]
        for r in api.get(f"/runs/{run['run_id']}/results").json()["results"]
        if r["operation"] == "compare_models"
    ]
    assert comparison["labelled"] is False and "accuracy" not in comparison["models"][0]
    assert "ground truth" in comparison["verdict"].lower()


SOME_ROWS = {
    "operation": "import_from_database",
    "parameters": {
        "connection": "samples",
        "query": "SELECT * FROM fire_risk WHERE name < 'site-2-0150' ORDER BY name",
    },
}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"truth_column": "no_such_column"}, "'no_such_column' are not in the table"),
        ({"truth_key": "temperature"}, "appears twice"),
        ({"truth": SOME_ROWS}, "no entry for 50 of the 200 inputs: 'site-2-0150'"),
    ],
)
def test_bad_truth_fails_the_run_naming_what_is_wrong(stack: Stack, api: httpx.Client, change: dict, expected: str):
    body = sample_with('"fire-risk-tree"', "compare_models")
    body["instructions"][2]["parameters"].update(change)
    run = stack.wait_for_run(api.post("/execute", json=body).json()["run_id"], timeout_s=120)
    assert run["run_status"] == "FAILURE"
    assert expected in run["error"]["message"], run["error"]
    assert run["error"]["path"] == "/instructions/2"


def test_a_feature_column_that_is_missing_or_not_numeric_is_named(stack: Stack, api: httpx.Client):
    body = sample_with('"fire-risk-tree"', "compare_models")
    inference = body["instructions"][2]["parameters"]["results"][0]["parameters"]
    inference["features"] = ["temperature", "humidity", "wind", "risk"]
    run = stack.wait_for_run(api.post("/execute", json=body).json()["run_id"], timeout_s=120)
    assert run["run_status"] == "FAILURE"
    assert "'risk'" in run["error"]["message"] and "not a number" in run["error"]["message"], run["error"]
    inference["features"] = ["temperature", "humidity", "wind", "rainfall"]
    run = stack.wait_for_run(api.post("/execute", json=body).json()["run_id"], timeout_s=120)
    assert "'rainfall'" in run["error"]["message"] and "not in the table" in run["error"]["message"], run["error"]


def test_a_table_given_to_an_image_model_is_refused_naming_the_model(stack: Stack, api: httpx.Client):
    body = sample_with('"fire-risk-tree"', "compare_models")
    body["instructions"][0]["parameters"] = {"model": "fire-vit-a"}
    body["instructions"][2]["parameters"]["results"][0]["parameters"]["model"] = "fire-vit-a"
    run = stack.wait_for_run(api.post("/execute", json=body).json()["run_id"], timeout_s=120)
    assert run["run_status"] == "FAILURE"
    assert "fire-vit-a" in run["error"]["message"] and "image-classification" in run["error"]["message"]


def test_the_dagster_run_page_shows_verdict_table_and_chart(stack: Stack, api: httpx.Client):
    run, comparison, _ = run_sample(stack, api, '"fire-risk-tree"', "compare_models")
    query = """query($id: ID!) { logsForRun(runId: $id) { ... on EventConnection { events {
        __typename ... on MessageEvent { message }
        ... on ExecutionStepOutputEvent { metadataEntries { label __typename
            ... on TextMetadataEntry { text } ... on MarkdownMetadataEntry { mdStr }
            ... on TableMetadataEntry { table { records } } } } } } } }"""
    answer = httpx.post(stack.dagster_url + "/graphql", json={"query": query, "variables": {"id": run["run_id"]}})
    events = answer.json()["data"]["logsForRun"]["events"]
    entries = {
        e["label"]: e for ev in events if ev["__typename"] == "ExecutionStepOutputEvent" for e in ev["metadataEntries"]
    }
    where = "compare_models /instructions/2"
    assert entries[f"{where} verdict"]["text"] == comparison["verdict"]
    assert "![comparison chart](data:image/png;base64," in entries[where]["mdStr"]
    records = [json.loads(r) for r in entries[f"{where} metrics"]["table"]["records"]]
    assert sorted(r["model"] for r in records) == ["fire-risk-logreg", "fire-risk-tree"]
    assert any(comparison["verdict"] in (ev.get("message") or "") for ev in events), "the verdict is in the run's log"


def test_the_comparison_is_in_dagsters_asset_catalog_under_its_dataset(stack: Stack, api: httpx.Client):
    run, comparison, _ = run_sample(stack, api, '"fire-risk-tree"', "compare_models")
    query = """query($key: AssetKeyInput!) { assetOrError(assetKey: $key) { ... on Asset {
        assetMaterializations(limit: 1) { runId description metadataEntries { label } } } } }"""
    key = {"path": ["comparisons", "database", "samples", "fire_risk"]}
    answer = httpx.post(stack.dagster_url + "/graphql", json={"query": query, "variables": {"key": key}}).json()
    [latest] = answer["data"]["assetOrError"]["assetMaterializations"]
    assert latest["runId"] == run["run_id"] and latest["description"] == comparison["verdict"]
    assert {"metrics", "models", "dataset", "verdict"} <= {e["label"] for e in latest["metadataEntries"]}
