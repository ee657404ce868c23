"""Write a small labelled image set for the sample pipelines: DATA_ROOT/samples/<label>/*.jpg."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import os
import sys
from pathlib import Path

import sqlalchemy as sa
from PIL import Image, ImageDraw
from sqlalchemy.dialects import mysql

import comparison_samples

LABELS = {"Fire": (220, 80, 20), "Normal": (60, 140, 60), "Smoke": (150, 150, 160)}


def write_samples(root: Path, per_label: int = 4, size: tuple[int, int] = (320, 240)) -> Path:
    """Create the sample images under `root` (idempotent) and return their folder."""
    folder = root / "samples"
    for label, colour in LABELS.items():
        (folder / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_label):
            path = folder / label / f"{label.lower()}_{i}.jpg"
            if path.exists():
                continue
            image = Image.new("RGB", size, colour)
            ImageDraw.Draw(image).ellipse(
                (20 + 30 * i, 20, 140 + 30 * i, 140), fill=(255 - 40 * i, 200, 40 * i)
            )
            image.save(path, quality=90)
    return folder


SAMPLES_TABLE = "constellation_samples"
SAMPLE_COLOURS = {"fire-1": (220, 60, 20), "fire-2": (250, 120, 0), "forest-1": (20, 140, 40), "lake-1": (30, 60, 200)}


def sample_image(colour: tuple[int, int, int], fmt: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (40, 30), colour).save(out, format=fmt)
    return out.getvalue()


def sample_rows() -> list[dict]:
    """The rows of `constellation_samples`: names, labels, times, scores, an image each, a note or NULL."""
    rows = []
    for i, (name, colour) in enumerate(SAMPLE_COLOURS.items(), start=1):
        rows.append({
            "id": i,
            "name": name,
            "label": name.split("-")[0],
            "taken_at": dt.datetime(2024, 5, i, 12, 30, 15),
            "score": decimal.Decimal(f"{i}.125"),
            "image": sample_image(colour, "PNG" if i % 2 else "JPEG"),
            "note": None if i % 2 else f"note {i}",
        })
    return rows


def samples_table(metadata: sa.MetaData, name: str = SAMPLES_TABLE) -> sa.Table:
    return sa.Table(
        name,
        metadata,
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("taken_at", sa.DateTime, nullable=False),
        sa.Column("score", sa.Numeric(10, 3), nullable=False),
        sa.Column("image", sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")),
        sa.Column("note", sa.Text),
    )


def seed_samples(engine: sa.Engine, name: str = SAMPLES_TABLE) -> None:
    """Create the samples table (`constellation_samples` unless named) in the engine's default schema; fill it."""
    table = samples_table(sa.MetaData(), name)
    with engine.begin() as conn:
        table.create(conn)
        conn.execute(table.insert(), sample_rows())


def write_sample_database(root: Path) -> str:
    """An SQLite file holding `constellation_samples`, for the database examples; its URL."""
    path = root / "samples.db"
    url = f"sqlite:///{path.resolve()}"
    root.mkdir(parents=True, exist_ok=True)
    engine = sa.create_engine(url)
    if SAMPLES_TABLE not in sa.inspect(engine).get_table_names():
        seed_samples(engine)
    comparison_samples.write_tables(engine)  # labelled rows and texts for the comparisons
    engine.dispose()
    return url


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CONSTELLATION_DATA_ROOT", "data"))
    print(f"sample images in {write_samples(root)}")
    print(f"sample database: {write_sample_database(root)}")
    print(f"comparison samples: {', '.join(str(p) for p in comparison_samples.write_files(root))}")
