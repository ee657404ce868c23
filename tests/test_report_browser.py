"""The comparison report in a real browser: Debian's Chromium, headless, driven by Playwright."""

from __future__ import annotations

import io

import httpx
import numpy as np
import pytest
from PIL import Image

from conftest import Stack
from samples import sample_with

pytestmark = pytest.mark.e2e


def test_the_report_renders_with_its_charts_and_no_console_errors(stack: Stack, api: httpx.Client, browser, tmp_path):
    run = stack.wait_for_run(api.post("/execute", json=sample_with('"fire-vit-b"', "compare_models")).json()["run_id"],
                             timeout_s=180)
    assert run["run_status"] == "SUCCESS", run
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    page.on("request", lambda r: problems.append(f"outside request {r.url}") if not r.url.startswith(
        (stack.api_url, "data:")) else None)
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
