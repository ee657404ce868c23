"""The report's presentations: Markdown with intervals, PNG charts, one self-contained HTML page."""

from __future__ import annotations

import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from orchestrator import compare
from orchestrator.compare import ModelRun, Truth

TRUTH = ["cat", "dog", "bird"] * 10
GOOD = TRUTH[:-3] + ["cat", "cat", "cat"]
BAD = ["cat"] * 30
NAMES = [f"{label}/{i}.jpg" for i, label in enumerate(TRUTH)]
LONG = "organisation-with-a-long-name/vision-transformer-base-patch16-224-finetuned-on-pets"
HOSTILE = '<script>alert("x")</script> & co'


def run(model: str, predicted: list[str]) -> ModelRun:
    items = [{"name": n, "labels": [p], "scores": [0.75]} for n, p in zip(NAMES, predicted, strict=True)]
    return ModelRun(
        model,
        "image-classification",
        items,
        {"inputs": 30, "seconds": 3.0, "batch_seconds": [1.0, 1.0, 1.0]},
        ["bird", "cat", "dog"],
    )


@pytest.fixture(scope="module")
def report() -> dict:
    return compare.compare(
        [run(LONG, GOOD), run(HOSTILE, BAD)], Truth("classes", compare.labels_from_folders(NAMES), source="folders")
    )


def test_report_is_plain_json(report: dict):
    assert json.loads(json.dumps(report, allow_nan=False)) == report
    assert {"task", "kind", "inputs", "labelled", "truth", "models", "pairs", "verdict", "best"} <= set(report)
    assert report["task"] == "image-classification" and report["best"] == LONG


def test_markdown_has_the_numbers_with_intervals_and_the_verdict(report: dict):
    text = compare.markdown(report)
    good = report["models"][0]
    low, high = good["accuracy_ci"]
    assert f"| {LONG} | {good['accuracy']:.3f} [{low:.3f}, {high:.3f}] |" in text
    assert f"**Verdict:** {report['verdict']}" in text.replace("\\|", "|")
    assert re.search(r"\| 0\.\d{3} \[0\.\d{3}, 0\.\d{3}\] \|", text)
    pair = report["pairs"][0]
    assert f"| {pair['agreement']:.3f} | {pair['kappa']:.3f} |" in text
    assert "| 10.0 | 1000.0 | 1000.0 |" in text  # inputs/s, p50 and p95 ms per request


def test_charts_are_pngs_with_full_names(report: dict, tmp_path: Path):
    drawn = compare.charts(report, tmp_path / "charts")
    assert set(drawn) == {"metric", "speed", "agreement", f"confusion/{LONG}", f"confusion/{HOSTILE}"}
    for path in drawn.values():
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG" and image.width > 300 and image.height > 150
    # the long name is wrapped, not cut: every character is on some line of the tick label
    from orchestrator.compare.plots import wrap

    assert wrap(LONG).replace("\n", "") == LONG and max(len(line) for line in wrap(LONG).split("\n")) <= 36


def test_unlabelled_charts_have_no_quality_metrics(tmp_path: Path):
    unlabelled = compare.compare([run("a", GOOD), run("b", BAD)], None)
    assert set(compare.charts(unlabelled, tmp_path)) == {"speed", "agreement"}


class Tags(HTMLParser):
    """Checks that every element is closed in order, and collects src/href attributes and the text a reader sees."""

    VOID = {"meta", "img", "br", "hr", "link", "input"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.links: list[str] = []
        self.tags: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        self.links += [value for name, value in attrs if name in ("src", "href")]
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_endtag(self, tag):
        assert self.stack and self.stack[-1] == tag, f"</{tag}> closes {self.stack[-1:]}"
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)  # entities decoded, as a browser shows them


def test_html_is_one_self_contained_page(report: dict, tmp_path: Path):
    drawn = compare.charts(report, tmp_path)
    rows = compare.find_disagreements(
        [run(LONG, GOOD), run(HOSTILE, BAD)], Truth("classes", compare.labels_from_folders(NAMES)), limit=5
    )
    thumbnail = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(thumbnail, format="PNG")
    rows[0]["thumbnail"] = thumbnail.getvalue()
    rows[1]["row"] = {"colour": "<b>red</b>", "legs": 4}
    page = compare.html_report(report, drawn, rows, title="Pets <test>")
    parser = Tags()
    parser.feed(page)
    assert parser.stack == []
    assert "script" not in parser.tags
    icon, *images = parser.links
    assert icon == "data:,"  # an empty icon: the browser asks for no favicon
    assert images and all(link.startswith("data:image/png;base64,") for link in images)
    assert not re.search(r"(src|href)\s*=\s*[\"']?\s*(https?:)?//", page, re.I)
    shown = "".join(parser.text)
    assert report["verdict"] in shown
    assert "<script>" not in page and HOSTILE in shown and "Pets <test>" in shown  # escaped, and shown as written
    assert "<b>red</b>" in shown and "&lt;b&gt;red&lt;/b&gt;" in page
    assert "default-src 'none'" in page
    assert page.count("<img") == len(drawn) + 1
    low, high = report["models"][0]["accuracy_ci"]
    assert f"{report['models'][0]['accuracy']:.3f} [{low:.3f}, {high:.3f}]" in page
    assert 'class="wrong"' in page and 'class="right"' in page


def test_disagreements_of_classifiers(report: dict):
    rows = compare.find_disagreements([run("a", GOOD), run("b", BAD), run("c", ["bird"] * 30)], None, limit=50)
    # inputs where three different answers were given come before those with two
    assert all(len(set(r["predictions"].values())) >= 2 for r in rows)
    counts = [len(set(r["predictions"].values())) for r in rows]
    assert counts == sorted(counts, reverse=True) and counts[0] == 3
    assert rows[0]["predictions"]["b"] == "cat (0.75)" and rows[0]["truth"] is None
    assert len(compare.find_disagreements([run("a", GOOD), run("b", BAD)], None, limit=3)) == 3
