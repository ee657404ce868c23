"""A comparison's report stands alone (issue 22): it names its run, when it was made, and the pipeline."""

from __future__ import annotations

import html
import json
from datetime import UTC, datetime

from orchestrator import compare
from orchestrator.compare import ModelRun, Truth
from orchestrator.compare.page import MAX_PIPELINE_CHARS, run_facts

NAMES = [f"{label}/{i}.jpg" for i, label in enumerate(["cat", "dog"] * 10)]
PIPELINE = [
    {
        "operation": "compare_models",
        "parameters": {
            "results": [
                {
                    "operation": "model_inference",
                    "parameters": {
                        "model": "<b>a</b>",
                        "data": {"operation": "import_from_local", "parameters": {"path": "pets"}},
                    },
                }
            ]
        },
    }
]


def report_page(run: dict | None) -> str:
    runs = [
        ModelRun(
            m,
            "image-classification",
            [{"name": n, "labels": [n.split("/")[0]], "scores": [1.0]} for n in NAMES],
            {"inputs": 20, "seconds": 1.0},
            ["cat", "dog"],
        )
        for m in ("a", "b")
    ]
    report = compare.compare(runs, Truth("classes", compare.labels_from_folders(NAMES), source="folders"))
    return compare.html_report(report, run=run)


def test_the_page_names_its_run_its_date_and_its_pipeline():
    facts = run_facts("4f0c1d2e-0000-4000-8000-000000000001", PIPELINE, datetime(2026, 12, 6, 21, 5, tzinfo=UTC))
    page = report_page(facts)
    assert "run <code>4f0c1d2e-0000-4000-8000-000000000001</code> · 2026-12-06 21:05 UTC" in page
    assert "&lt;b&gt;a&lt;/b&gt;" in page and "<b>a</b>" not in page  # the pipeline is text, escaped
    assert json.dumps({"instructions": PIPELINE}, indent=1) in html.unescape(page)
    assert 'id="pipeline"' not in report_page(None)  # a page made outside a run says nothing of one


def test_a_huge_pipeline_is_cut_saying_so():
    facts = run_facts("r", [{"operation": "x", "parameters": {"text": "y" * 200_000}}])
    assert len(facts["pipeline"]) < MAX_PIPELINE_CHARS + 100 and facts["pipeline"].endswith("more characters cut)")
