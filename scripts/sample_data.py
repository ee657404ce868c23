"""Write a small labelled image set for the sample pipelines: DATA_ROOT/samples/<label>/*.jpg."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from PIL import Image, ImageDraw

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


if __name__ == "__main__":
    root = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("CONSTELLATION_DATA_ROOT", "data"))
    print(f"sample images in {write_samples(root)}")
