"""Benchmark: the data plane (import → resize → batch) vs a hand-written two-core Pillow loop.

    .venv/bin/python bench/data_plane.py [--images 2000] [--repeat 3]

Both sides do the same work on the same 1024×768 JPEGs: open, decode with `draft()`, resize to
224×224 (Lanczos), encode as JPEG (quality 95), write. Each run is a fresh subprocess, so its
peak RSS is its own (`os.wait4`). Then the pipeline runs on 10× the dataset (hard links of
the same files under other names) to show that memory does not grow with the dataset.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "data_plane.md"
SIZE = (1024, 768)
TARGET = (224, 224)


def make_dataset(folder: Path, count: int) -> None:
    """`count` distinct 1024×768 JPEGs (gradients and shapes; about 60 KB each)."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)

    def one(i: int) -> None:
        path = folder / f"img_{i:05d}.jpg"
        if path.exists():
            return
        image = Image.linear_gradient("L").resize(SIZE).convert("RGB")
        draw = ImageDraw.Draw(image)
        for k in range(12):
            x, y = (i * 37 + k * 91) % 900, (i * 53 + k * 67) % 650
            draw.ellipse((x, y, x + 120, y + 90), fill=((i * 7 + k * 40) % 256, (k * 70) % 256, (i * 3) % 256))
        image.save(path, quality=90)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, range(count)))


def replicate(source: Path, folder: Path, times: int) -> None:
    """`times` copies of the dataset as hard links: same bytes, `times` as many files."""
    for copy in range(times):
        target = folder / f"copy{copy}"
        target.mkdir(parents=True, exist_ok=True)
        for path in source.iterdir():
            link = target / path.name
            if not link.exists():
                os.link(path, link)


# -- the two workers, each run in its own process ----------------------------------------------


def load_pipeline_modules():
    sys.path.insert(0, str(ROOT))
    from orchestrator.assets.repository import CATALOG
    from orchestrator.assets.resources import Workspace
    from orchestrator.engine import RunContext, build_plan, execute

    return CATALOG, Workspace, RunContext, build_plan, execute


def run_imports_only(data_root: Path, folder: str, work: Path) -> int:
    """The pipeline's process with its modules loaded and no work: the memory floor."""
    load_pipeline_modules()
    return 0


def run_pipeline(data_root: Path, folder: str, work: Path) -> int:
    """import_from_local → dict_to_list → resize_image → batch_formatted_data, through the engine."""
    CATALOG, Workspace, RunContext, build_plan, execute = load_pipeline_modules()  # noqa: N806

    imported = {"operation": "import_from_local", "parameters": {"path": folder}}
    listed = {"operation": "dict_to_list", "parameters": {"data": imported}}
    resized = {"operation": "resize_image", "parameters": {"data": listed, "width": TARGET[0], "height": TARGET[1]}}
    batched = {"operation": "batch_formatted_data", "parameters": {"data": resized, "batch_size": 32}}
    plan = build_plan([batched], CATALOG)
    workspace = Workspace(data_root=str(data_root), artifact_root=str(work))
    [batches] = execute(plan, CATALOG, RunContext(run_dir=work / "run", resources=SimpleNamespace(workspace=workspace)))
    return batches.count


def run_baseline(data_root: Path, folder: str, work: Path) -> int:
    """The same work by hand: two threads, draft(), Lanczos, JPEG 95."""
    from PIL import Image

    out = work / "baseline"
    out.mkdir(parents=True, exist_ok=True)
    files = sorted((data_root / folder).rglob("*.jpg"))

    def one(path: Path) -> None:
        with Image.open(path) as image:
            image.draft("RGB", TARGET)
            resized = image.resize(TARGET, Image.Resampling.LANCZOS)
        target = out / path.relative_to(data_root).as_posix().replace("/", "_")
        resized.save(target, format="JPEG", quality=95)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, files))
    return len(files)


WORKERS = {"pipeline": run_pipeline, "baseline": run_baseline, "imports": run_imports_only}


def measure(kind: str, data_root: Path, folder: str) -> dict[str, float]:
    """Run one worker in a fresh process: the time of its work (after imports) and its own peak RSS."""
    with tempfile.TemporaryDirectory(prefix="constellation-bench-") as work:
        command = [sys.executable, __file__, "--worker", kind, "--data", str(data_root), "--folder", folder,
                   "--work", work]
        process = subprocess.Popen(command, stdout=subprocess.PIPE)
        _, status, usage = os.wait4(process.pid, 0)
        output = process.stdout.read().decode() if process.stdout else ""
        if status != 0:
            raise RuntimeError(f"{kind} worker failed ({status}): {output}")
    return {**json.loads(output), "peak_mb": usage.ru_maxrss / 1024}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "out" / "data")
    parser.add_argument("--worker", choices=WORKERS)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--folder")
    parser.add_argument("--work", type=Path)
    args = parser.parse_args(argv)
    if args.worker:  # inside a measured subprocess
        if args.worker != "baseline":
            load_pipeline_modules()  # imports are not part of the timed work
        start = time.perf_counter()
        images = WORKERS[args.worker](args.data, args.folder, args.work)
        print(json.dumps({"images": images, "seconds": time.perf_counter() - start}))
        return 0

    data_root = args.cache / f"{args.images}"
    print(f"dataset: {args.images} JPEGs of {SIZE[0]}×{SIZE[1]} in {data_root} ...", flush=True)
    make_dataset(data_root / "one", args.images)
    replicate(data_root / "one", data_root / "ten", 10)

    samples: dict[str, list[dict[str, float]]] = {"pipeline": [], "baseline": []}
    for round_ in range(args.repeat):
        order = ["baseline", "pipeline"] if round_ % 2 == 0 else ["pipeline", "baseline"]
        for kind in order:
            samples[kind].append(measure(kind, data_root, "one"))
            print(f"  {kind}: {samples[kind][-1]}", flush=True)
    floor = measure("imports", data_root, "one")
    ten = measure("pipeline", data_root, "ten")
    ten_baseline = measure("baseline", data_root, "ten")
    print(f"  pipeline 10×: {ten}\n  baseline 10×: {ten_baseline}", flush=True)
    report = render(samples, ten, ten_baseline, floor, args)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(report)
    print(report)
    return 0


def render(samples, ten, ten_baseline, floor, args) -> str:
    def med(kind: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[kind])

    p_s, b_s = med("pipeline", "seconds"), med("baseline", "seconds")
    p_mb = max(s["peak_mb"] for s in samples["pipeline"])
    b_mb = max(s["peak_mb"] for s in samples["baseline"])
    n = args.images
    return "\n".join([
        "## Data plane: import → resize → batch vs a hand-written two-core Pillow loop",
        "",
        f"{n} JPEGs of {SIZE[0]}×{SIZE[1]} → {TARGET[0]}×{TARGET[1]}, median of {args.repeat} interleaved runs, "
        f"each a fresh process; Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d')}.",
        "",
        "| measure | pipeline | baseline | pipeline / baseline |",
        "|---|---:|---:|---:|",
        f"| seconds for {n} images | {p_s:.2f} | {b_s:.2f} | {p_s / b_s:.2f} |",
        f"| images per second | {n / p_s:.0f} | {n / b_s:.0f} | {b_s / p_s:.2f} |",
        f"| peak RSS, MB ({n} images) | {p_mb:.0f} | {b_mb:.0f} | {p_mb / b_mb:.2f} |",
        f"| peak RSS above the process's imports, MB | {p_mb - floor['peak_mb']:.0f} | | |",
        "",
        f"Timed: the work only, after imports. The pipeline's process imports Dagster and the op modules "
        f"({floor['peak_mb']:.0f} MB before any work); the baseline imports only Pillow.",
        "",
        "| measure | 1× | 10× | 10× / 1× |",
        "|---|---:|---:|---:|",
        f"| pipeline peak RSS, MB | {p_mb:.0f} | {ten['peak_mb']:.0f} | {ten['peak_mb'] / p_mb:.2f} |",
        f"| baseline peak RSS, MB | {b_mb:.0f} | {ten_baseline['peak_mb']:.0f} "
        f"| {ten_baseline['peak_mb'] / b_mb:.2f} |",
        f"| pipeline seconds | {p_s:.2f} | {ten['seconds']:.2f} | {ten['seconds'] / p_s:.2f} |",
        "",
    ])


if __name__ == "__main__":
    sys.exit(main())
