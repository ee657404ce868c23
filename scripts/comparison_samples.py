"""Sample data with ground truth for every kind of comparison, made locally (no download).

- `fire_risk`: a labelled table (weather features → wildfire risk class and burned area),
  with a training half used to fit the sample tabular models and a held-out half to compare them;
- `fire_reports`: short texts labelled `fire` / `no fire`;
- `detection/`: images with boxes drawn where COCO JSON says they are;
- `segmentation/`: images and their class-id masks (0 background, 1 fire, 2 smoke).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from PIL import Image, ImageDraw

FEATURES = ["temperature", "humidity", "wind", "drought"]
RISK_TABLE, RISK_TRAIN_TABLE, REPORTS_TABLE = "fire_risk", "fire_risk_train", "fire_reports"
DETECTION_LABELS = ("fire", "smoke")
SEGMENTATION_LABELS = ("background", "fire", "smoke")
COLOURS = {"fire": (235, 90, 20), "smoke": (150, 150, 160)}


def fire_risk_rows(count: int, seed: int) -> list[dict]:
    """Weather rows with a risk class that mostly, not always, follows the weather; and a burned area."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(count):
        temperature, humidity = rng.normal(27, 6), rng.uniform(10, 90)
        wind, drought = rng.gamma(3, 5), rng.uniform(0, 5)
        score = 0.12 * (temperature - 27) - 0.05 * (humidity - 50) + 0.05 * (wind - 15) + 0.6 * (drought - 2.5)
        noisy = score + rng.normal(0, 0.8)
        rows.append({
            "name": f"site-{seed}-{i:04d}",
            "temperature": round(float(temperature), 2), "humidity": round(float(humidity), 2),
            "wind": round(float(wind), 2), "drought": round(float(drought), 3),
            "risk": "high" if noisy > 0 else "low",
            "burned_area": round(max(0.0, float(12 + 4 * score + rng.normal(0, 2))), 3),
        })
    return rows


TEXTS = {
    "fire": ["flames seen above the ridge", "smoke and fire near the road", "the forest is burning",
             "a wildfire spreads fast in the wind", "fire crews fight the blaze", "burning trees by the lake"],
    "no fire": ["a calm day at the lake", "clear sky over the forest", "the hikers reached the summit",
                "rain fell all night", "the river is quiet", "green trees and a blue sky"],
}


def report_rows() -> list[dict]:
    return [
        {"name": f"report-{label.replace(' ', '-')}-{i}", "text": text, "label": label}
        for label, texts in TEXTS.items() for i, text in enumerate(texts)
    ]


def write_tables(engine: sa.Engine) -> None:
    """Create and fill the comparison tables (missing ones only)."""
    metadata = sa.MetaData()
    risk_columns = lambda: [  # noqa: E731 - one column list for two tables
        sa.Column("name", sa.String(32), primary_key=True),
        *(sa.Column(f, sa.Float, nullable=False) for f in FEATURES),
        sa.Column("risk", sa.String(8), nullable=False),
        sa.Column("burned_area", sa.Float, nullable=False),
    ]
    tables = {
        RISK_TABLE: (sa.Table(RISK_TABLE, metadata, *risk_columns()), fire_risk_rows(200, seed=2)),
        RISK_TRAIN_TABLE: (sa.Table(RISK_TRAIN_TABLE, metadata, *risk_columns()), fire_risk_rows(400, seed=1)),
        REPORTS_TABLE: (sa.Table(REPORTS_TABLE, metadata, sa.Column("name", sa.String(64), primary_key=True),
                                 sa.Column("text", sa.Text, nullable=False), sa.Column("label", sa.String(16))),
                        report_rows()),
    }
    existing = set(sa.inspect(engine).get_table_names())
    with engine.begin() as conn:
        for name, (table, rows) in tables.items():
            if name not in existing:
                table.create(conn)
                conn.execute(table.insert(), rows)


def write_csv_table(root: Path) -> Path:
    """The held-out fire_risk rows as a CSV file too, for read_table."""
    import csv

    path = root / "tables" / "fire_risk.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = fire_risk_rows(200, seed=2)
    with path.open("w", newline="") as sink:
        writer = csv.DictWriter(sink, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def write_detection(root: Path, count: int = 8, size: int = 96) -> Path:
    """Images with fire and smoke boxes, and `coco.json` saying where they are."""
    folder = root / "detection"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = random.Random(3)
    images, annotations = [], []
    for i in range(count):
        name = f"scene_{i}.png"
        image = Image.new("RGB", (size, size), (40, 110, 50))
        draw = ImageDraw.Draw(image)
        for label in rng.sample(DETECTION_LABELS, rng.randint(1, 2)):
            w, h = rng.randint(16, 40), rng.randint(16, 40)
            x, y = rng.randint(0, size - w), rng.randint(0, size - h)
            draw.rectangle((x, y, x + w - 1, y + h - 1), fill=COLOURS[label])
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1,
                                "category_id": DETECTION_LABELS.index(label) + 1,
                                "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
        image.save(folder / "images" / name)
        images.append({"id": i + 1, "file_name": name, "width": size, "height": size})
    categories = [{"id": i + 1, "name": label} for i, label in enumerate(DETECTION_LABELS)]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (folder / "coco.json").write_text(json.dumps(coco, indent=1))
    return folder


def write_segmentation(root: Path, count: int = 6, size: int = 64) -> Path:
    """Images of fire and smoke patches, and `masks/<name>.png` whose pixels are class ids."""
    folder = root / "segmentation"
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(parents=True, exist_ok=True)
    rng = random.Random(4)
    for i in range(count):
        image = Image.new("RGB", (size, size), (40, 110, 50))
        mask = Image.new("L", (size, size), 0)
        for class_id, label in enumerate(SEGMENTATION_LABELS[1:], start=1):
            x, y, r = rng.randint(8, size - 8), rng.randint(8, size - 8), rng.randint(6, 18)
            ImageDraw.Draw(image).ellipse((x - r, y - r, x + r, y + r), fill=COLOURS[label])
            ImageDraw.Draw(mask).ellipse((x - r, y - r, x + r, y + r), fill=class_id)
        image.save(folder / "images" / f"patch_{i}.png")
        mask.save(folder / "masks" / f"patch_{i}.png")
    return folder


def write_files(root: Path) -> list[Path]:
    """Every file-based comparison sample under the data root: the CSV table, detection and segmentation sets."""
    return [write_csv_table(root), write_detection(root), write_segmentation(root)]
