"""Benchmark: bytes import_from_stac fetches for a bbox covering 1/16 of a remote COG, vs the file's size.

    .venv/bin/python bench/stac_range.py [--size 8192] [--bands 4] [--block 512] [--placements 6]

Writes once, into bench/out/stac_range/, a COG of size × size × bands uint16 (UTM 33N, 10 m,
deflate, block × block tiles, no overviews, so the ratio is against the full-resolution data
only) and a static STAC catalog of it, then serves that folder on 127.0.0.1 with a plain HTTP
server that honours Range and counts every body byte it sends. For each placement the op runs
in process (engine op, URL policy with private addresses allowed) with a WGS84 bbox inside a
(size/4)² pixel window: one aligned on the tile grid, the others at seeded random offsets. The
bytes are the server's count for the .tif (the catalog's JSON apart); each output is checked
against rasterio reading the same window from the local file.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
OUT = ROOT / "bench" / "out" / "stac_range"


def make_cog(path: Path, size: int, bands: int, block: int) -> None:
    import numpy as np
    import rasterio
    import rasterio.shutil
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(19)
    tmp = path.with_suffix(".part.tif")
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=bands,
        dtype="uint16",
        crs="EPSG:32633",
        transform=from_origin(500_000, 5_000_000, 10, 10),
        nodata=0,
        tiled=True,
        blockxsize=block,
        blockysize=block,
        compress="deflate",
        bigtiff="IF_SAFER",
    )
    with rasterio.open(tmp, "w", **profile) as dst:  # written by strips: the scene never sits in memory
        for row in range(0, size, block):
            rows = min(block, size - row)
            ramp = np.linspace(500, 3500, size, dtype=np.float32)[None, None, :]
            noise = rng.normal(0, 150, (bands, rows, size)).astype(np.float32)
            dst.write(np.clip(ramp + noise, 1, 10_000).astype(np.uint16), window=Window(0, row, size, rows))
    with rasterio.open(tmp) as src:
        rasterio.shutil.copy(
            src, path, driver="COG", compress="deflate", blocksize=block, overviews="NONE", bigtiff="IF_SAFER"
        )
    tmp.unlink()


class Counting(BaseHTTPRequestHandler):
    """Serves the site folder: whole files, or one byte range (Range: bytes=a-b); counts body bytes."""

    folder: Path
    sent: list[tuple[str, int]]

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        path = (self.folder / self.path.lstrip("/")).resolve()
        if not path.is_relative_to(self.folder) or not path.is_file():
            self.send_error(404)
            return
        size = path.stat().st_size
        wanted = self.headers.get("Range", "")
        start, end = 0, size - 1
        if wanted.startswith("bytes="):
            first, _, last = wanted[6:].partition("-")
            start, end = int(first), min(int(last) if last else size - 1, size - 1)
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        with path.open("rb") as source:
            source.seek(start)
            self.wfile.write(source.read(end - start + 1))
        self.sent.append((self.path, end - start + 1))

    def log_message(self, format: str, *args: object) -> None:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--bands", type=int, default=4)
    parser.add_argument("--block", type=int, default=512)
    parser.add_argument("--placements", type=int, default=6)
    args = parser.parse_args()

    import numpy as np
    import rasterio
    from rasterio.windows import Window, from_bounds
    from stac_samples import catalog, inner_bbox, item, wgs84_bounds

    from orchestrator.assets import ops
    from orchestrator.assets.resources import Workspace
    from orchestrator.engine import RunContext

    site = OUT / f"site-{args.size}-{args.bands}-{args.block}"
    scene = site / "scene" / "scene.tif"
    if not scene.exists():
        started = time.perf_counter()
        make_cog(scene, args.size, args.bands, args.block)
        print(f"wrote {scene} ({scene.stat().st_size:,} bytes) in {time.perf_counter() - started:.0f} s")
        bands = [(f"B{i}", None) for i in range(1, args.bands + 1)]
        made = item("scene", wgs84_bounds(scene), "2024-06-15T10:00:00+00:00", 3.0, {"data": (str(scene), bands)})
        catalog(site, [made])
    size = scene.stat().st_size

    sent: list[tuple[str, int]] = []
    handler = type("Handler", (Counting,), {"folder": site.resolve(), "sent": sent})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/catalog.json"

    quarter = args.size // 4  # a quarter of the side: 1/16 of the area
    rng = random.Random(19)
    placements = [("aligned on tiles", args.block * 2, args.block * 2)]
    placements += [
        (f"random {i}", rng.randrange(0, args.size - quarter), rng.randrange(0, args.size - quarter))
        for i in range(1, args.placements)
    ]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        workspace = Workspace(data_root=tmp, artifact_root=f"{tmp}/art", url_allow_private=True)
        for label, col, row in placements:
            ctx = RunContext(run_dir=Path(tmp) / f"run-{len(rows)}", resources=SimpleNamespace(workspace=workspace))
            bbox = inner_bbox(scene, col, row, quarter, quarter)
            sent.clear()
            started = time.perf_counter()
            [ref] = ops.import_from_stac(ctx, url, bbox=bbox, assets=["data"])
            elapsed = time.perf_counter() - started
            tif = [length for path, length in sent if path.endswith(".tif")]
            with rasterio.open(scene) as src, rasterio.open(ref.path) as got:
                window = from_bounds(*got.bounds, transform=src.transform).round_offsets()
                same = np.array_equal(
                    got.read(), src.read(window=Window(window.col_off, window.row_off, got.width, got.height))
                )
            rows.append(
                {
                    "placement": label,
                    "window": f"{ref.meta['width']}×{ref.meta['height']} at ({col}, {row})",
                    "requests": len(tif),
                    "bytes": sum(tif),
                    "ratio": sum(tif) / size,
                    "seconds": round(elapsed, 2),
                    "pixels equal": same,
                }
            )
    server.shutdown()

    lines = [
        f"COG {args.size}×{args.size}×{args.bands} uint16, {args.block}² tiles, deflate, no overviews: "
        f"{size:,} bytes; bbox inside a {quarter}² window (1/16 of the area); goal ≤ 1/8 = 0.125",
        "",
        "| placement | window read | range requests | bytes fetched | of the file | time (s) | pixels equal |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['placement']} | {r['window']} | {r['requests']} | {r['bytes']:,} | {r['ratio']:.4f} "
            f"| {r['seconds']} | {r['pixels equal']} |"
        )
    ratios = [r["ratio"] for r in rows]
    lines += ["", f"ratio: min {min(ratios):.4f}, median {statistics.median(ratios):.4f}, max {max(ratios):.4f}"]
    text = "\n".join(lines)
    print(text)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "stac_range.md").write_text(text + "\n")
    (OUT / "stac_range.json").write_text(json.dumps({"file_bytes": size, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
