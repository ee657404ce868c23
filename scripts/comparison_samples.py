"""Sample data with ground truth for every kind of comparison, made locally (no download).

- `fire_risk`: a labelled table (weather features → wildfire risk class and burned area),
  with a training half used to fit the sample tabular models and a held-out half to compare them;
- `fire_reports`: short texts labelled `fire` / `no fire`;
- `fire-photos/`: pictures in folders named by their class (Fire, Normal, Smoke);
- `detection/`: camera tiles of 2 x 2 views, fire or smoke in some, and COCO JSON saying where;
- `segmentation/`: images and their class-id masks (0 background, 1 fire, 2 smoke).

Each set is drawn from a generator by seed: the sample models (scripts/sample_models.py) are fitted
on other draws of the same generators, then compared on these. Enough items that a comparison's
95 % intervals tell the models apart (90 pictures, 60 texts, 40 tiles, 24 masks).
"""

from __future__ import annotations

import json
import random
import shutil
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
        rows.append(
            {
                "name": f"site-{seed}-{i:04d}",
                "temperature": round(float(temperature), 2),
                "humidity": round(float(humidity), 2),
                "wind": round(float(wind), 2),
                "drought": round(float(drought), 3),
                "risk": "high" if noisy > 0 else "low",
                "burned_area": round(max(0.0, float(12 + 4 * score + rng.normal(0, 2))), 3),
            }
        )
    return rows


# Short reports, written from what is seen (first words) and where (last words); places say nothing of fire.
SEEN = {
    "fire": [
        "flames seen",
        "smoke and fire",
        "a wildfire spreads",
        "fire crews fight the blaze",
        "burning trees",
        "the fire grows",
        "thick smoke rises",
        "embers and smoke",
    ],
    "no fire": [
        "a calm day",
        "clear sky",
        "hikers reached the summit",
        "rain fell all night",
        "a quiet morning",
        "green trees and a blue sky",
        "a good day",
        "fog in the valley",
    ],
}
PLACES = [
    "above the ridge",
    "near the road",
    "by the lake",
    "over the forest",
    "in the valley",
    "at the camp",
    "on the hill",
    "behind the farm",
]


def reports(count: int, seed: int) -> list[tuple[str, str]]:
    """`count` (text, label) pairs, labels alternating."""
    rng = random.Random(seed)
    labels = list(SEEN)
    return [
        (f"{rng.choice(SEEN[label])} {rng.choice(PLACES)}", label) for label in (labels[i % 2] for i in range(count))
    ]


def report_rows() -> list[dict]:
    return [
        {"name": f"report-{i:02d}", "text": text, "label": label} for i, (text, label) in enumerate(reports(60, seed=5))
    ]


PHOTO_LABELS = ("Fire", "Normal", "Smoke")
PHOTO_COLOURS = {"Fire": (220, 80, 20), "Normal": (60, 140, 60), "Smoke": (150, 150, 160)}


def fire_photos(per_class: int, seed: int, size: tuple[int, int] = (96, 72)) -> list[tuple[Image.Image, str]]:
    """Pictures of each class: its colour, varied, behind a few shapes of any colour."""
    rng = np.random.default_rng(seed)
    found = []
    for label in PHOTO_LABELS:
        for _ in range(per_class):
            background = np.clip(np.array(PHOTO_COLOURS[label]) + rng.integers(-45, 46, 3), 0, 255)
            image = Image.new("RGB", size, tuple(int(v) for v in background))
            draw = ImageDraw.Draw(image)
            for _ in range(int(rng.integers(1, 4))):
                x, y, r = int(rng.integers(0, size[0])), int(rng.integers(0, size[1])), int(rng.integers(4, 22))
                draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(v) for v in rng.integers(0, 256, 3)))
            found.append((image, label))
    return found


def write_fire_photos(root: Path, per_class: int = 30) -> Path:
    """`fire-photos/<class>/<class>_<i>.jpg`: the pictures two image classifiers are compared on."""
    folder = root / "fire-photos"
    shutil.rmtree(folder, ignore_errors=True)  # this sample's own folder: an older set goes whole
    for i, (image, label) in enumerate(fire_photos(per_class, seed=7)):
        (folder / label).mkdir(parents=True, exist_ok=True)
        image.save(folder / label / f"{label.lower()}_{i % per_class:02d}.jpg", quality=90)
    return folder


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
        REPORTS_TABLE: (
            sa.Table(
                REPORTS_TABLE,
                metadata,
                sa.Column("name", sa.String(64), primary_key=True),
                sa.Column("text", sa.Text, nullable=False),
                sa.Column("label", sa.String(16)),
            ),
            report_rows(),
        ),
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


TILE, CELL, MARGIN = 96, 48, 6  # a camera tile of 2 x 2 views; what a view shows fills it but for a margin


def cell_box(k: int, scale: float = 1.0) -> tuple[float, float, float, float]:
    """View k's object as (x, y, width, height) in pixels, `scale` times its size about its centre."""
    side = (CELL - 2 * MARGIN) * scale
    centre_x, centre_y = (k % 2) * CELL + CELL / 2, (k // 2) * CELL + CELL / 2
    return centre_x - side / 2, centre_y - side / 2, side, side


def grid_scenes(count: int, seed: int) -> list[tuple[Image.Image, list[int | None]]]:
    """Tiles whose views each show fire, smoke (label indexes) or nothing (None), in colours that vary."""
    rng = random.Random(seed)
    scenes = []
    for _ in range(count):
        image = Image.new("RGB", (TILE, TILE), (40, 110, 50))
        draw = ImageDraw.Draw(image)
        cells: list[int | None] = []
        for k in range(4):
            shown = rng.choice([0, 1, None])
            if shown is not None:
                colour = tuple(min(255, max(0, c + rng.randint(-30, 30))) for c in COLOURS[DETECTION_LABELS[shown]])
                x, y, w, h = cell_box(k)
                draw.rectangle((x, y, x + w - 1, y + h - 1), fill=colour)
            cells.append(shown)
        scenes.append((image, cells))
    return scenes


def write_detection(root: Path, count: int = 40) -> Path:
    """Tiles with fire and smoke boxes, and `coco.json` saying where they are."""
    folder = root / "detection"
    shutil.rmtree(folder / "images", ignore_errors=True)  # this sample's own folder: an older set goes whole
    (folder / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, (image, cells) in enumerate(grid_scenes(count, seed=3)):
        name = f"scene_{i:02d}.png"
        for k, shown in enumerate(cells):
            if shown is not None:
                x, y, w, h = cell_box(k)
                annotations.append(
                    {
                        "id": len(annotations) + 1,
                        "image_id": i + 1,
                        "category_id": shown + 1,
                        "bbox": [x, y, w, h],
                        "area": w * h,
                        "iscrowd": 0,
                    }
                )
        image.save(folder / "images" / name)
        images.append({"id": i + 1, "file_name": name, "width": TILE, "height": TILE})
    categories = [{"id": i + 1, "name": label} for i, label in enumerate(DETECTION_LABELS)]
    coco = {"images": images, "annotations": annotations, "categories": categories}
    (folder / "coco.json").write_text(json.dumps(coco, indent=1))
    return folder


def patches(count: int, seed: int, size: int = 64) -> list[tuple[Image.Image, Image.Image]]:
    """Images of fire and smoke patches on vegetation, and their masks of class ids."""
    rng = random.Random(seed)
    found = []
    for _ in range(count):
        image = Image.new("RGB", (size, size), (40, 110, 50))
        mask = Image.new("L", (size, size), 0)
        for class_id, label in enumerate(SEGMENTATION_LABELS[1:], start=1):
            x, y, r = rng.randint(8, size - 8), rng.randint(8, size - 8), rng.randint(6, 18)
            colour = tuple(min(255, max(0, c + rng.randint(-25, 25))) for c in COLOURS[label])
            ImageDraw.Draw(image).ellipse((x - r, y - r, x + r, y + r), fill=colour)
            ImageDraw.Draw(mask).ellipse((x - r, y - r, x + r, y + r), fill=class_id)
        found.append((image, mask))
    return found


def write_segmentation(root: Path, count: int = 24) -> Path:
    """Images of fire and smoke patches, and `masks/<name>.png` whose pixels are class ids."""
    folder = root / "segmentation"
    for part in ("images", "masks"):  # this sample's own folders: an older set goes whole
        shutil.rmtree(folder / part, ignore_errors=True)
        (folder / part).mkdir(parents=True)
    for i, (image, mask) in enumerate(patches(count, seed=4)):
        image.save(folder / "images" / f"patch_{i:02d}.png")
        mask.save(folder / "masks" / f"patch_{i:02d}.png")
    return folder


def write_files(root: Path) -> list[Path]:
    """Every file-based comparison sample under the data root: the CSV table, the pictures, detection and
    segmentation sets."""
    return [write_csv_table(root), write_fire_photos(root), write_detection(root), write_segmentation(root)]
