"""A report that stands alone (issue 22), seen in a real browser (Debian's Chromium through Playwright): per-class
tables with the numbers of the JSON report, and detection and segmentation thumbnails with each model's boxes
or mask drawn on them in the colours of the page's legend. The pages are made in process, as compare_models
makes them, and loaded into the browser as they are."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator import compare
from orchestrator.compare import ModelRun, Truth, drilldown, reporting
from orchestrator.datasets import Predictions

GREY = 128
NUMBER = re.compile(r"-?\d+\.\d+")


def grey_images(folder: Path, names: list[str], size: tuple[int, int]) -> dict[str, Path]:
    """One plain grey JPEG per input: whatever else a thumbnail shows was drawn on it."""
    files = {}
    for name in names:
        path = folder / f"{Path(name).stem}.jpg"
        Image.new("RGB", size, (GREY, GREY, GREY)).save(path, quality=95)
        files[name] = path
    return files


def models(task: str, labels: list[str], items: dict[str, list[dict]], inputs: dict[str, Path], folder: Path):
    stats = {"inputs": len(inputs), "seconds": 1.0}
    results = [
        Predictions(model, found, stats, folder / f"{model}.json", task, labels, inputs)
        for model, found in items.items()
    ]
    runs = [ModelRun(r.model, r.task, r.items, r.stats, r.labels) for r in results]
    return results, runs


# Detection: 12 images of 100×100; a person in each, a dog in every other one. "sharp" finds both, "blind"
# finds only the person, and on the first image a dog where there is none.
DETECTION_NAMES = [f"street/img{i}.jpg" for i in range(12)]
DOG = [50, 50, 80, 90]  # xmin, ymin, xmax, ymax
PERSON = [10, 20, 40, 70]
STRAY = [60, 5, 90, 30]


def detection_page(folder: Path) -> tuple[dict, str]:
    images, annotations = [], []
    for i, name in enumerate(DETECTION_NAMES):
        images.append({"id": i + 1, "file_name": name, "width": 100, "height": 100})
        for category, (x0, y0, x1, y1) in [(1, PERSON)] + ([(2, DOG)] if i % 2 == 0 else []):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": i + 1,
                    "category_id": category,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                }
            )
    coco = folder / "instances.json"
    coco.write_text(
        json.dumps(
            {
                "images": images,
                "annotations": annotations,
                "categories": [{"id": 1, "name": "person"}, {"id": 2, "name": "dog"}],
            }
        )
    )
    found: dict[str, list[dict]] = {"sharp": [], "blind": []}
    for i, name in enumerate(DETECTION_NAMES):
        person = {"label": "person", "score": 0.9, "box": PERSON}
        dogs = [{"label": "dog", "score": 0.8, "box": DOG}] if i % 2 == 0 else []
        stray = [{"label": "dog", "score": 0.7, "box": STRAY}] if i == 0 else []
        found["sharp"].append({"name": name, "width": 100, "height": 100, "detections": [person, *dogs]})
        found["blind"].append({"name": name, "width": 100, "height": 100, "detections": [person, *stray]})
    inputs = grey_images(folder, DETECTION_NAMES, (100, 100))
    results, runs = models("object-detection", ["person", "dog"], found, inputs, folder)
    truth = Truth("coco", coco=coco, source="COCO")
    report = compare.compare(runs, truth)
    page = compare.html_report(
        report, compare.charts(report, folder / "charts"), reporting.disagreements(results, runs, truth)
    )
    return report, page


# Segmentation: 8 images of 80×60 with background (0), road (1) and car (2). "exact" predicts the truth;
# "wide" widens the road by 10 rows and moves the car right by 20 columns.
SEGMENTATION_LABELS = ["background", "road", "car"]
SEGMENTATION_NAMES = [f"scene{j}.png" for j in range(8)]


def scene(road_from: int, car_left: int) -> np.ndarray:
    mask = np.zeros((60, 80), dtype=np.uint8)
    mask[road_from:, :] = 1
    mask[40:55, car_left : car_left + 20] = 2
    return mask


def segmentation_page(folder: Path, readable: bool = True) -> tuple[dict, str]:
    def saved(name: str, mask: np.ndarray) -> str:
        Image.fromarray(mask).save(folder / name)
        return str(folder / name)

    truth = Truth("masks", {n: saved(f"truth-{n}", scene(30, 10)) for n in SEGMENTATION_NAMES}, source="masks/")
    found = {
        "exact": [{"name": n, "mask": saved(f"exact-{n}", scene(30, 10))} for n in SEGMENTATION_NAMES],
        "wide": [
            {"name": n, "mask": saved(f"wide-{n}", scene(20 + j % 2, 30))} for j, n in enumerate(SEGMENTATION_NAMES)
        ],
    }
    inputs = grey_images(folder, SEGMENTATION_NAMES, (80, 60))
    if not readable:  # e.g. multi-band GeoTIFF tiles, which Pillow cannot show
        inputs = {name: path.with_suffix(".tif") for name, path in inputs.items()}
        for path in inputs.values():
            path.write_bytes(b"four bands of float32: not a picture Pillow can read")
    results, runs = models("image-segmentation", SEGMENTATION_LABELS, found, inputs, folder)
    report = compare.compare(runs, truth)
    page = compare.html_report(
        report, compare.charts(report, folder / "charts"), reporting.disagreements(results, runs, truth)
    )
    return report, page


def classification_page(with_drilldown: bool) -> tuple[dict, str]:
    truth = ["cat", "dog", "bird"] * 12
    guesses = {"good": truth[:-4] + ["cat", "cat", "dog", "cat"], "poor": ["cat", "dog"] * 18}
    names = [f"{label}/{i}.jpg" for i, label in enumerate(truth)]
    runs = [
        ModelRun(
            m,
            "image-classification",
            [{"name": n, "labels": [g], "scores": [0.8]} for n, g in zip(names, guessed, strict=True)],
            {"inputs": len(names), "seconds": 1.0},
            ["bird", "cat", "dog"],
        )
        for m, guessed in guesses.items()
    ]
    found = Truth("classes", compare.labels_from_folders(names), source="folders")
    report = compare.compare(runs, found)
    results = [Predictions(r.model, r.items, r.stats, Path("unused.json"), r.task, r.labels) for r in runs]
    cells = drilldown.cells(results, runs, found, report) if with_drilldown else None
    return report, compare.html_report(report, drilldown=cells)


@pytest.fixture
def page(browser):
    opened = browser.new_page(viewport={"width": 1400, "height": 900})
    yield opened
    opened.close()


def table_of(locator) -> list[list[str]]:
    return [row.locator("th, td").all_inner_texts() for row in locator.locator("tr").all()]


def numbers(cell: str) -> list[float]:
    return [float(n) for n in NUMBER.findall(cell)]


def shown(value: float | None, interval: list[float] | None = None) -> list[float]:
    """A value and its interval as the page rounds them (three decimals)."""
    return [round(v, 3) for v in ([value] + list(interval or []))] if value is not None else []


def test_detection_and_segmentation_pages_have_per_class_tables_with_the_json_numbers(page, tmp_path: Path):
    (tmp_path / "d").mkdir()
    (tmp_path / "s").mkdir()
    for report, html, key in [
        (*detection_page(tmp_path / "d"), "per_class_ap"),
        (*segmentation_page(tmp_path / "s"), "per_class_iou"),
    ]:
        page.set_content(html)
        head, *rows = table_of(page.locator("section#per-class table"))
        assert head == ["class", *(m["model"] for m in report["models"])]
        classes = list(dict.fromkeys(c for m in report["models"] for c in m[key]))
        assert [row[0] for row in rows] == classes and classes
        for row in rows:
            for cell, m in zip(row[1:], report["models"], strict=True):
                expected = shown(m[key].get(row[0]), (m.get(f"{key}_ci") or {}).get(row[0]))
                assert numbers(cell) == pytest.approx(expected, abs=1e-9), (row[0], m["model"], cell)
        assert page.locator("section#per-class").is_visible()


@pytest.mark.parametrize("with_drilldown", [True, False])
def test_a_classifier_per_class_table_has_the_json_numbers_and_intervals(page, with_drilldown: bool):
    report, html = classification_page(with_drilldown)
    page.set_content(html)
    where = "section#drilldown" if with_drilldown else "section#per-class"
    step = 2 if with_drilldown else 1  # the drill-down follows each per-class table with a confusion matrix
    tables = [table_of(page.locator(f"{where} table").nth(step * i)) for i in range(len(report["models"]))]
    intervals = 0
    for table, m in zip(tables, report["models"], strict=True):
        head, *rows = table
        assert head == ["class (truth)", "support", "precision", "recall", "F1", "IoU"]
        assert [row[0] for row in rows] == list(m["per_class"])
        for label, support, *cells in rows:
            entry = m["per_class"][label]
            assert int(support) == entry["support"]
            for cell, metric in zip(cells, ["precision", "recall", "f1", "iou"], strict=True):
                # an interval, unless no resample defines it (poor never predicts a bird: no precision for birds)
                assert numbers(cell) == pytest.approx(shown(entry[metric], entry[f"{metric}_ci"]), abs=1e-9)
                intervals += entry[f"{metric}_ci"] is not None
    assert intervals == 2 * 3 * 4 - 1


def legend_colours(page) -> dict[str, np.ndarray]:
    entries = page.locator("section#disagreements p.legend span")
    found = {}
    for i in range(entries.count()):
        entry = entries.nth(i)
        colour = entry.locator("i").evaluate("e => getComputedStyle(e).backgroundColor")
        found[entry.inner_text().strip()] = np.array([int(v) for v in re.findall(r"\d+", colour)[:3]])
    return found


def picture(page, row_name: str, column: int) -> tuple[np.ndarray, float]:
    """The pixels of a thumbnail as the browser shows it, and its scale against the input image."""
    row = page.locator("section#disagreements tbody tr", has=page.locator(f"td.name:text-is('{row_name}')"))
    image = row.locator("td").nth(column).locator("img")
    image.scroll_into_view_if_needed()
    natural = image.evaluate("e => [e.naturalWidth, e.naturalHeight]")
    box = image.bounding_box()
    assert (box["width"], box["height"]) == tuple(natural)  # shown at its own size
    # The table may place it at a fraction of a pixel; Chromium draws it on whole pixels, rounded.
    area = {"x": round(box["x"]), "y": round(box["y"]), "width": natural[0], "height": natural[1]}
    pixels = np.asarray(Image.open(io.BytesIO(page.screenshot(clip=area))).convert("RGB")).astype(int)
    return pixels, natural[0]


def close(pixel: np.ndarray, colour: np.ndarray, tolerance: int = 40) -> bool:
    return bool(np.abs(pixel - colour).max() <= tolerance)


def edge(pixels: np.ndarray, box: list[float], scale: float) -> np.ndarray:
    """The pixels down the middle of a box's left edge (the class name sits above the box)."""
    x0, y0, _, y1 = (v * scale for v in box)
    return pixels[round(y0 + 0.25 * (y1 - y0)) : round(y1 - 0.25 * (y1 - y0)), round(x0)]


def test_detection_thumbnails_draw_each_models_boxes_in_the_legend_colours(page, tmp_path: Path):
    _, html = detection_page(tmp_path)
    page.set_content(html)
    colours = legend_colours(page)
    assert set(colours) == {"person", "dog"} and not close(colours["person"], colours["dog"])
    head = page.locator("section#disagreements thead th").all_inner_texts()
    assert head == ["input", "truth", "sharp", "blind"]
    name = DETECTION_NAMES[0]  # the truth has a dog; sharp found it, blind found a stray dog instead
    truth, scale = picture(page, name, 1)
    sharp, _ = picture(page, name, 2)
    blind, _ = picture(page, name, 3)
    assert scale / 100 > 1.5  # a small image is shown larger, so that boxes and names can be read
    scale /= 100
    for pixels in (truth, sharp, blind):
        assert all(close(p, colours["person"]) for p in edge(pixels, PERSON, scale))
    for pixels in (truth, sharp):
        assert all(close(p, colours["dog"]) for p in edge(pixels, DOG, scale))
    assert all(close(p, colours["dog"]) for p in edge(blind, STRAY, scale))
    # where a picture has no box: the grey image itself
    assert all(close(p, np.array([GREY] * 3), 12) for p in edge(blind, DOG, scale))
    assert all(close(p, np.array([GREY] * 3), 12) for p in edge(sharp, STRAY, scale))
    centre = [round((DOG[1] + DOG[3]) / 2 * scale), round((DOG[0] + DOG[2]) / 2 * scale)]
    assert close(sharp[centre[0], centre[1]], np.array([GREY] * 3), 12)  # a box is an outline
    # the coordinates are still there, folded under each picture
    details = page.locator("section#disagreements details.coordinates").first
    assert details.inner_text().strip() == "boxes"  # closed: what is seen is the word alone
    details.locator("summary").click()
    assert re.search(r"\[\d+, \d+, \d+, \d+\]", details.inner_text())


def test_segmentation_thumbnails_overlay_each_models_mask_in_the_legend_colours(page, tmp_path: Path):
    _, html = segmentation_page(tmp_path)
    page.set_content(html)
    colours = legend_colours(page)
    assert set(colours) == set(SEGMENTATION_LABELS)
    name = SEGMENTATION_NAMES[0]
    truth, width = picture(page, name, 1)
    exact, _ = picture(page, name, 2)
    wide, _ = picture(page, name, 3)
    scale = width / 80

    def seen(pixels: np.ndarray, x: int, y: int) -> np.ndarray:
        return pixels[round((y + 0.5) * scale), round((x + 0.5) * scale)]

    def overlay(label: str) -> np.ndarray:
        return (1 - reporting.MASK_ALPHA) * GREY + reporting.MASK_ALPHA * colours[label]

    for pixels in (truth, exact):
        assert close(seen(pixels, 40, 10), overlay("background"), 12)
        assert close(seen(pixels, 40, 25), overlay("background"), 12)
        assert close(seen(pixels, 60, 35), overlay("road"), 12)
        assert close(seen(pixels, 15, 47), overlay("car"), 12)
    assert close(seen(wide, 40, 25), overlay("road"), 12)  # its road starts 10 rows higher
    assert close(seen(wide, 15, 47), overlay("road"), 12)  # and its car is further right
    assert close(seen(wide, 40, 47), overlay("car"), 12)
    assert close(seen(truth, 40, 47), overlay("road"), 12)


def test_masks_whose_image_cannot_be_shown_are_drawn_alone_in_the_legend_colours(page, tmp_path: Path):
    _, html = segmentation_page(tmp_path, readable=False)
    page.set_content(html)
    colours = legend_colours(page)
    name = SEGMENTATION_NAMES[0]
    truth, width = picture(page, name, 1)
    wide, _ = picture(page, name, 3)
    scale = width / 80
    assert width > 80  # a small mask is shown larger too

    def seen(pixels: np.ndarray, x: int, y: int) -> np.ndarray:
        return pixels[round((y + 0.5) * scale), round((x + 0.5) * scale)]

    assert close(seen(truth, 40, 25), colours["background"], 12) and close(seen(wide, 40, 25), colours["road"], 12)
    assert close(seen(truth, 15, 47), colours["car"], 12) and close(seen(wide, 40, 47), colours["car"], 12)
