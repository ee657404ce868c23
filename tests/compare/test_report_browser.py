"""The comparison report in a real browser: Debian's Chromium, headless, driven by Playwright."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from harness import Stack
from orchestrator.compare import drilldown
from samples import sample_with

pytestmark = pytest.mark.e2e


def test_the_report_renders_with_its_charts_and_no_console_errors(stack: Stack, api: httpx.Client, browser, tmp_path):
    run = stack.wait_for_run(
        api.post("/execute", json=sample_with('"fire-vit-b"', "compare_models")).json()["run_id"], timeout_s=180
    )
    assert run["run_status"] == "SUCCESS", run
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on(
        "request",
        lambda r: (
            problems.append(f"outside request {r.url}") if not r.url.startswith((stack.api_url, "data:")) else None
        ),
    )
    answer = page.goto(f"{stack.api_url}/runs/{run['run_id']}/report", wait_until="load")
    assert answer is not None and answer.status == 200
    images = page.eval_on_selector_all("img", "els => els.map(e => [e.naturalWidth, e.naturalHeight, e.alt])")
    assert images and all(w > 0 and h > 0 for w, h, _ in images), images
    assert page.locator("text=accuracy").first.is_visible()
    chart = page.locator("img").first
    chart.scroll_into_view_if_needed()
    shot = Image.open(io.BytesIO(chart.screenshot(path=str(tmp_path / "chart.png"))))
    pixels = np.asarray(shot.convert("RGB")).reshape(-1, 3)
    # A chart has axes, bars and text: many distinct colours, not a blank or broken image.
    assert len(np.unique(pixels, axis=0)) > 20
    assert problems == [], problems


def test_confusion_cells_and_classes_open_their_inputs(stack: Stack, api: httpx.Client, browser):
    run = stack.wait_for_run(
        api.post("/execute", json=sample_with('"fire-vit-b"', "compare_models")).json()["run_id"], timeout_s=180
    )
    assert run["run_status"] == "SUCCESS", run
    results = api.get(f"/runs/{run['run_id']}/results").json()["results"]
    [comparison] = [r["output"] for r in results if r["operation"] == "compare_models"]
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    # The page has no script (checked below) and the gateway serves it sandboxed: after a same-page navigation
    # Chromium reports the scripts Playwright itself tries to run in the page as blocked. Those are not the page's.
    automation = "because the document's frame is sandboxed and the 'allow-scripts' permission is not set"
    page.on(
        "console",
        lambda m: (
            problems.append(m.text)
            if m.type in ("error", "warning")
            and not (m.text.startswith("Blocked script execution") and automation in m.text)
            else None
        ),
    )
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on(
        "request",
        lambda r: (
            problems.append(f"outside request {r.url}") if not r.url.startswith((stack.api_url, "data:")) else None
        ),
    )
    page.goto(f"{stack.api_url}/runs/{run['run_id']}/report", wait_until="load")
    assert page.locator("script").count() == 0 and "onclick" not in page.content()
    first = comparison["models"][0]
    labels, matrix = first["confusion"]["labels"], first["confusion"]["matrix"]
    # an off-diagonal cell when the model made a mistake, else the first cell with inputs
    cells = [(t, p) for t in range(len(labels)) for p in range(len(labels)) if matrix[t][p]]
    true, predicted = next(((t, p) for t, p in cells if t != p), cells[0])
    links = page.locator("table.confusion").first.locator("tbody tr").nth(true).locator("td").nth(predicted)
    target = links.locator("a").get_attribute("href")
    listing = page.locator(target)
    assert not listing.is_visible()
    links.locator("a").click()
    listing.wait_for(state="visible")
    assert page.evaluate("location.hash") == target
    heading = listing.locator("h4").inner_text()
    assert f"true {labels[true]}, predicted {labels[predicted]}" in heading
    assert f"{matrix[true][predicted]} input" in heading
    names = listing.locator(".input-name").all_inner_texts()
    assert len(names) == min(drilldown.PREVIEWS, matrix[true][predicted])
    assert all(name.startswith(labels[true] + "/") for name in names)
    # each input shows its thumbnail: a JPEG data: URI drawn as the picture's background
    pictures = listing.locator("span.pic")
    assert pictures.count() == len(names)
    backgrounds = pictures.evaluate_all("els => els.map(e => getComputedStyle(e).backgroundImage)")
    assert all(b.startswith('url("data:image/jpeg;base64,') for b in backgrounds), backgrounds[:1]
    assert pictures.first.bounding_box()["width"] == 96
    listing.locator("text=close").click()
    assert not listing.is_visible()
    # a class of the per-class table opens that class's inputs, mistakes first
    row = page.locator("section#drilldown table").first.locator("tbody tr").nth(true)
    row.locator("a").click()
    opened = page.locator(row.locator("a").get_attribute("href"))
    opened.wait_for(state="visible")
    marks = opened.locator("ul.inputs li").evaluate_all("els => els.map(e => e.className)")
    # the first PREVIEWS inputs with their pictures, mistakes first (the rest are named below them)
    assert len(marks) == min(drilldown.PREVIEWS, sum(matrix[true]))
    assert marks == sorted(marks, key=lambda m: m != "wrong")
    assert problems == [], problems
