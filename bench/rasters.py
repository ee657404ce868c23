"""Rasters: tile_image on an 8192 × 8192 × 4-band uint16 COG vs a hand-written rasterio windowed loop.

Both sides cut the same Cloud Optimized GeoTIFF into 256 × 256 tiles (1,024 GeoTIFFs, deflate with
horizontal predictor, band descriptions kept) into a fresh folder:

- pipeline: the engine and the real ops of this checkout, `import_from_local` → `tile_image`
  (raster facts of the import, windowed reads, GeoTIFF tiles with their own geotransform);
- loop: `rasterio.open`, `src.read(window=...)` and one `rasterio.open(..., "w")` per tile, as one
  would write it by hand, with GDAL's defaults (its block cache: 5 % of the machine's memory);
- loop-cache64 (`--cache64`): the same loop under GDAL_CACHEMAX = 64 MB, the pipeline's setting.

Each run is a fresh process; its imports come before the clock, the time is the work only. A round
runs every side once, the order turning every round; the table gives medians and the median of the
rounds' own ratios. Memory: the peak resident memory (VmHWM) of each side's process (one process
each: the raster path runs on threads), imports included. The scene is written once into
bench/out/rasters/ (about 0.3 GB on disk).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "rasters.md"
SIZE, BANDS, TILE = 8192, 4, 256
NAMES = ("B02", "B03", "B04", "B08")


def make_scene(path: Path, size: int = SIZE) -> Path:
    """An 8192² × 4 uint16 COG (EPSG:32633, 10 m, 512² blocks, deflate + predictor, overviews), once."""
    if path.exists():
        return path
    import numpy as np
    import rasterio
    import rasterio.shutil
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    path.parent.mkdir(parents=True, exist_ok=True)
    plain = path.with_suffix(".plain.tif")
    profile = {
        "driver": "GTiff",
        "width": size,
        "height": size,
        "count": BANDS,
        "dtype": "uint16",
        "crs": "EPSG:32633",
        "transform": from_origin(399_960, 5_000_040, 10, 10),
        "nodata": 0,
        "tiled": True,
        "blockxsize": 512,
        "blockysize": 512,
        "compress": "deflate",
        "predictor": 2,
    }
    rng = np.random.default_rng(19)
    with rasterio.Env(GDAL_PAM_ENABLED="NO"), rasterio.open(plain, "w", **profile) as out:
        out.descriptions = NAMES
        cols = np.arange(size)[None, :]
        for row in range(0, size, 512):
            rows = np.arange(row, row + 512)[:, None]
            field = 2000 + 800 * np.sin(cols / 300.0) * np.cos(rows / 450.0)  # fields and hills, not noise only
            block = np.stack([field * (0.6 + 0.3 * b) + rng.normal(0, 40, (512, size)) for b in range(BANDS)])
            out.write(np.clip(block, 1, 65535).astype(np.uint16), window=Window(0, row, size, 512))
    with rasterio.Env(GDAL_PAM_ENABLED="NO"):
        rasterio.shutil.copy(plain, path, driver="COG", compress="DEFLATE", predictor="2", blocksize=512)
    plain.unlink()
    return path


def pipeline(scene: Path, work: Path) -> int:
    from types import SimpleNamespace

    from orchestrator.assets.repository import CATALOG
    from orchestrator.assets.resources import Workspace
    from orchestrator.engine import RunContext, build_plan, execute

    imported = {"operation": "import_from_local", "parameters": {"path": scene.name}}
    tiles = {"operation": "tile_image", "parameters": {"data": imported, "tile_width": TILE, "tile_height": TILE}}
    workspace = Workspace(data_root=str(scene.parent), artifact_root=str(work / "art"))
    ctx = RunContext(run_dir=work / "run", resources=SimpleNamespace(workspace=workspace))
    [result] = execute(build_plan([tiles], CATALOG), CATALOG, ctx)
    return len(result)


def loop(scene: Path, work: Path) -> int:
    import rasterio
    from rasterio.windows import Window

    count = 0
    with rasterio.open(scene) as src:
        profile = {**src.profile, "width": TILE, "height": TILE, "compress": "deflate", "predictor": 2, "tiled": False}
        for key in ("blockxsize", "blockysize", "interleave"):
            profile.pop(key, None)
        folder = work / scene.stem
        folder.mkdir(parents=True)
        for row in range(0, src.height, TILE):
            for col in range(0, src.width, TILE):
                window = Window(col, row, min(TILE, src.width - col), min(TILE, src.height - row))
                data = src.read(window=window)
                with rasterio.open(
                    folder / f"x{col}_y{row}.tif",
                    "w",
                    **{
                        **profile,
                        "width": data.shape[2],
                        "height": data.shape[1],
                        "transform": src.window_transform(window),
                    },
                ) as out:
                    out.write(data)
                    out.descriptions = src.descriptions
                count += 1
    return count


SIDES = {"pipeline": pipeline, "loop": loop, "loop-cache64": loop}
LABELS = {
    "pipeline": "pipeline (`import_from_local → tile_image`)",
    "loop": "hand-written rasterio loop (GDAL defaults)",
    "loop-cache64": "the same loop, GDAL_CACHEMAX 64 MB",
}


def worker(kind: str, scene: Path) -> int:
    """Inside a measured subprocess: imports first (not timed), then the timed work, then clean up."""
    if kind == "loop-cache64":
        os.environ["GDAL_CACHEMAX"] = "64"
    if kind == "pipeline":
        import orchestrator.assets.repository  # noqa: F401 - the engine and the ops
        import orchestrator.transforms.raster_ops  # noqa: F401
    import rasterio  # noqa: F401

    imported_mb = rss_mb()
    with tempfile.TemporaryDirectory(prefix="constellation-bench-", dir=scene.parent) as work:
        before = resource.getrusage(resource.RUSAGE_SELF)
        started = time.perf_counter()
        count = SIDES[kind](scene, Path(work))
        seconds = time.perf_counter() - started
        after = resource.getrusage(resource.RUSAGE_SELF)
        written = sum(p.stat().st_size for p in Path(work).rglob("*.tif"))
    print(
        json.dumps(
            {
                "tiles": count,
                "seconds": seconds,
                "written_mb": written / 2**20,
                "peak_mb": peak_mb(),
                "imports_mb": imported_mb,
                "cpu_s": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
            }
        )
    )
    return 0


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    """This process's peak resident memory since its exec (VmHWM; wait4's ru_maxrss would carry the parent's
    peak over the fork and exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(kind: str, scene: Path) -> dict[str, float]:
    process = subprocess.Popen(
        [sys.executable, __file__, "--worker", kind, "--scene", str(scene)], stdout=subprocess.PIPE, cwd=ROOT
    )
    output = process.stdout.read().decode() if process.stdout else ""
    _, status, _ = os.wait4(process.pid, 0)
    if status != 0:
        raise RuntimeError(f"{kind} failed ({status}): {output}")
    return json.loads(output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--scene", type=Path, default=ROOT / "bench" / "out" / "rasters" / "scene_cog.tif")
    parser.add_argument("--cache64", action="store_true", help="also the loop under GDAL_CACHEMAX 64 MB")
    parser.add_argument("--worker", choices=SIDES)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.scene)
    started = time.perf_counter()
    make_scene(args.scene)
    print(
        f"scene {args.scene} ({args.scene.stat().st_size / 2**20:.0f} MB) ready in "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )
    kinds = ["pipeline", "loop"] + (["loop-cache64"] if args.cache64 else [])
    samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    load = [os.getloadavg()[0]]
    for round_ in range(args.repeat):
        order = kinds[round_ % len(kinds) :] + kinds[: round_ % len(kinds)]
        for kind in order:
            samples[kind].append(measure(kind, args.scene))
            print(f"  {kind}: {samples[kind][-1]}", flush=True)
    load.append(os.getloadavg()[0])
    report = render(samples, load, args)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(report)
    print(report)
    return 0


def render(samples: dict[str, list[dict[str, float]]], load: list[float], args: argparse.Namespace) -> str:
    def med(kind: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[kind])

    scene_mb = SIZE * SIZE * BANDS * 2 / 2**20
    lines = [
        f"## Rasters: tile_image vs a rasterio windowed loop, {SIZE}×{SIZE}×{BANDS} uint16 COG → {TILE}² tiles",
        "",
        f"{args.repeat} interleaved rounds, each run a fresh process, time after imports; Python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')}; load average "
        f"{' → '.join(f'{v:.2f}' for v in load)}; the scene's pixels: {scene_mb:.0f} MiB.",
        "",
        "| side | seconds | speed / loop (medians) | speed / loop (median of rounds, min–max) | CPU s | peak RSS MB "
        "| peak / loop's | of which after imports, MB | tiles MB written |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in samples:
        ratios = [b["seconds"] / a["seconds"] for a, b in zip(samples[kind], samples["loop"], strict=True)]
        lines.append(
            f"| {LABELS[kind]} | {med(kind, 'seconds'):.2f} | {med('loop', 'seconds') / med(kind, 'seconds'):.2f} "
            f"| {statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) | {med(kind, 'cpu_s'):.2f} "
            f"| {med(kind, 'peak_mb'):.0f} | {med(kind, 'peak_mb') / med('loop', 'peak_mb'):.2f} "
            f"| {statistics.median(s['peak_mb'] - s['imports_mb'] for s in samples[kind]):.0f} "
            f"| {med(kind, 'written_mb'):.0f} |"
        )
    lines += [
        "",
        "Each round's seconds: "
        + "; ".join(f"{kind} " + " ".join(f"{s['seconds']:.2f}" for s in samples[kind]) for kind in samples),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
