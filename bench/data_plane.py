"""Benchmark: the data plane (import → resize → batch) vs a hand-written two-process Pillow loop.

    .venv/bin/python bench/data_plane.py [--images 2000] [--repeat 5] [--before ../other-checkout]

Every side does the same work on the same 1024×768 JPEGs: open, decode with `draft()`, resize
to 224×224 (Lanczos), encode as JPEG (quality 95), write. Each run is a fresh subprocess. The
sides alternate round by round (the first switching every round) and the medians are compared;
the CPU the rest of the machine used during each run is reported beside them. Then each side
runs once more on 1× and on 10× the dataset (hard links of the same files under other names)
with its process tree's memory sampled, to show how memory grows with the dataset.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "bench" / "out" / "data_plane.md"
SIZE = (1024, 768)
TARGET = (224, 224)
LOOP_PROCESSES = 2


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


# -- the sides, each run in its own process ------------------------------------------------------


def load_pipeline_modules(root: Path):
    sys.path.insert(0, str(root))
    from orchestrator.assets.repository import CATALOG
    from orchestrator.assets.resources import Workspace
    from orchestrator.engine import RunContext, build_plan, execute
    from orchestrator.transforms import images  # noqa: F401 - the ops import it when they first run

    return CATALOG, Workspace, RunContext, build_plan, execute


def run_pipeline(data_root: Path, folder: str, work: Path, root: Path) -> int:
    """import_from_local → dict_to_list → resize_image → batch_formatted_data, through the engine."""
    CATALOG, Workspace, RunContext, build_plan, execute = load_pipeline_modules(root)  # noqa: N806

    imported = {"operation": "import_from_local", "parameters": {"path": folder}}
    listed = {"operation": "dict_to_list", "parameters": {"data": imported}}
    resized = {"operation": "resize_image", "parameters": {"data": listed, "width": TARGET[0], "height": TARGET[1]}}
    batched = {"operation": "batch_formatted_data", "parameters": {"data": resized, "batch_size": 32}}
    plan = build_plan([batched], CATALOG)
    workspace = Workspace(data_root=str(data_root), artifact_root=str(work))
    [batches] = execute(plan, CATALOG, RunContext(run_dir=work / "run", resources=SimpleNamespace(workspace=workspace)))
    return batches.count


def loop_one(job: tuple[Path, Path]) -> None:
    """One image by hand: draft(), Lanczos, JPEG 95."""
    from PIL import Image

    source, target = job
    with Image.open(source) as image:
        image.draft("RGB", TARGET)
        resized = image.resize(TARGET, Image.Resampling.LANCZOS)
    resized.save(target, format="JPEG", quality=95)


def loop_jobs(data_root: Path, folder: str, work: Path) -> list[tuple[Path, Path]]:
    out = work / "baseline"
    out.mkdir(parents=True, exist_ok=True)
    files = sorted((data_root / folder).rglob("*.jpg"))
    return [(path, out / path.relative_to(data_root).as_posix().replace("/", "_")) for path in files]


def run_loop(data_root: Path, folder: str, work: Path, root: Path) -> int:
    """The hand-written loop: a pool of two processes (no GIL to share), images handed out 16 at a time."""
    jobs = loop_jobs(data_root, folder, work)
    with multiprocessing.Pool(LOOP_PROCESSES) as pool:
        for _ in pool.imap_unordered(loop_one, jobs, chunksize=16):
            pass
    return len(jobs)


def run_threads(data_root: Path, folder: str, work: Path, root: Path) -> int:
    """The same loop on two threads of one process (Pillow lets go of the GIL while it decodes and resamples)."""
    jobs = loop_jobs(data_root, folder, work)
    with ThreadPoolExecutor(2) as pool:
        list(pool.map(loop_one, jobs))
    return len(jobs)


def run_imports_only(data_root: Path, folder: str, work: Path, root: Path) -> int:
    """The pipeline's process with its modules loaded and no work: the memory floor."""
    return 0


SIDES = {
    "pipeline": run_pipeline,
    "before": run_pipeline,
    "loop": run_loop,
    "threads": run_threads,
    "imports": run_imports_only,
}
LABELS = {
    "pipeline": "pipeline (this checkout)",
    "before": "pipeline (--before)",
    "loop": "two-process loop",
    "threads": "two-thread loop",
    "imports": "imports only",
}


# -- measuring ---------------------------------------------------------------------------------


def busy_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores, all processes)."""
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    user, nice, system, idle, iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class TreeMemory:
    """Samples a process and all its descendants: the peak of the summed RSS and of the summed PSS.

    PSS counts a page shared by n processes (forked workers share their parent's pages until
    they write to them) as 1/n in each, so the summed PSS is the memory the tree really holds;
    the summed RSS counts shared pages once per process that maps them (an upper bound).
    """

    def __init__(self, pid: int, every_s: float = 0.05):
        import psutil

        self.root, self.every_s = psutil.Process(pid), every_s
        self.rss = self.pss = 0
        self.processes = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            self.sample()

    def sample(self) -> None:
        import psutil

        try:
            tree = [self.root, *self.root.children(recursive=True)]
        except psutil.Error:
            return
        rss = pss = 0
        for process in tree:
            try:
                with open(f"/proc/{process.pid}/smaps_rollup") as rollup:
                    for line in rollup:
                        if line.startswith("Rss:"):
                            rss += int(line.split()[1]) * 1024
                        elif line.startswith("Pss:"):
                            pss += int(line.split()[1]) * 1024
            except OSError:
                continue  # it ended between the listing and the read
        self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)
        self.processes = max(self.processes, len(tree))

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()


def measure(kind: str, data_root: Path, folder: str, root: Path, tree: bool = False) -> dict[str, float]:
    """Run one side in a fresh process: its work's wall and CPU time (after imports) and its memory."""
    with tempfile.TemporaryDirectory(prefix="constellation-bench-") as work:
        command = [
            sys.executable,
            __file__,
            "--worker",
            kind,
            "--data",
            str(data_root),
            "--folder",
            folder,
            "--work",
            work,
            "--root",
            str(root),
        ]
        busy, started = busy_seconds(), time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.PIPE)
        sampler = TreeMemory(process.pid) if tree else None
        output = process.stdout.read().decode() if process.stdout else ""
        if sampler:
            sampler.stop()
        _, status, usage = os.wait4(process.pid, 0)
        busy, lifetime = busy_seconds() - busy, time.perf_counter() - started
        if status != 0:
            raise RuntimeError(f"{kind} worker failed ({status}): {output}")
    result = json.loads(output)
    own_cpu = usage.ru_utime + usage.ru_stime  # the worker (imports too) and every child it reaped
    result.update(
        # ru_maxrss of wait4: the largest single process of the tree (the worker or one of its children)
        peak_mb=usage.ru_maxrss / 1024,
        # what every other process of the machine kept busy during the run, in cores
        others_cores=max(0.0, busy - own_cpu) / lifetime,
    )
    if sampler:
        result.update(tree_rss_mb=sampler.rss / 2**20, tree_pss_mb=sampler.pss / 2**20, processes=sampler.processes)
    return result


def worker(kind: str, data: Path, folder: str, work: Path, root: Path) -> int:
    """Inside a measured subprocess: imports first (not timed), then the timed work."""
    if kind in ("pipeline", "before", "imports"):
        load_pipeline_modules(root)
    else:
        from PIL import Image  # noqa: F401
    started_wall = time.perf_counter()
    mine, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    count = SIDES[kind](data, folder, work, root)
    seconds = time.perf_counter() - started_wall
    mine2, children2 = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = sum(
        after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
        for before, after in ((mine, mine2), (children, children2))
    )
    print(json.dumps({"images": count, "seconds": seconds, "wall_s": time.perf_counter() - started_wall, "cpu_s": cpu}))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--cache", type=Path, default=ROOT / "bench" / "out" / "data")
    parser.add_argument("--before", type=Path, help="another checkout: its pipeline runs beside this one's")
    parser.add_argument("--threads", action="store_true", help="also time the two-thread loop")
    parser.add_argument("--skip-memory", action="store_true", help="no 1× / 10× memory runs")
    parser.add_argument("--worker", choices=SIDES)
    parser.add_argument("--data", type=Path)
    parser.add_argument("--folder")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--root", type=Path, default=ROOT)
    args = parser.parse_args(argv)
    if args.worker:
        return worker(args.worker, args.data, args.folder, args.work, args.root)

    data_root = args.cache / f"{args.images}"
    print(f"dataset: {args.images} JPEGs of {SIZE[0]}×{SIZE[1]} in {data_root} ...", flush=True)
    make_dataset(data_root / "one", args.images)
    replicate(data_root / "one", data_root / "ten", 10)
    roots = {"pipeline": ROOT, "loop": ROOT, "threads": ROOT}
    if args.before:
        roots["before"] = args.before.resolve()
    if not args.threads:
        del roots["threads"]
    kinds = list(roots)
    load = [os.getloadavg()[0]]

    samples: dict[str, list[dict[str, float]]] = {kind: [] for kind in kinds}
    for round_ in range(args.repeat):
        order = kinds[round_ % len(kinds) :] + kinds[: round_ % len(kinds)]
        if round_ % 2:
            order.reverse()
        for kind in order:
            samples[kind].append(measure(kind, data_root, "one", roots[kind]))
            print(f"  {kind}: {samples[kind][-1]}", flush=True)
    load.append(os.getloadavg()[0])
    memory: dict[str, dict[str, dict[str, float]]] = {}
    if not args.skip_memory:
        memory["imports"] = {"one": measure("imports", data_root, "one", ROOT, tree=True)}
        for kind in kinds:
            memory[kind] = {size: measure(kind, data_root, size, roots[kind], tree=True) for size in ("one", "ten")}
            print(f"  {kind} memory: {memory[kind]}", flush=True)
        load.append(os.getloadavg()[0])
    report = render(samples, memory, load, args)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(report)
    print(report)
    return 0


def render(samples, memory, load, args) -> str:
    def med(kind: str, key: str) -> float:
        return statistics.median(s[key] for s in samples[kind])

    n = args.images
    loop_s = med("loop", "seconds")
    lines = [
        "## Data plane: import → resize → batch vs a hand-written two-process Pillow loop",
        "",
        f"{n} JPEGs of {SIZE[0]}×{SIZE[1]} → {TARGET[0]}×{TARGET[1]}, median of {args.repeat} interleaved rounds, "
        f"each run a fresh process; Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{time.strftime('%Y-%m-%d')}; load average {' → '.join(f'{v:.2f}' for v in load)}.",
        "",
        "| side | seconds | images/s | speed / loop (medians) | speed / loop (median of the rounds' ratios) "
        "| CPU s of the work | other processes' CPU during it, cores |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for kind in samples:
        s = med(kind, "seconds")
        ratios = [loop["seconds"] / mine["seconds"] for loop, mine in zip(samples["loop"], samples[kind], strict=True)]
        lines.append(
            f"| {LABELS[kind]} | {s:.2f} | {n / s:.0f} | {loop_s / s:.2f} "
            f"| {statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f}) | {med(kind, 'cpu_s'):.2f} "
            f"| {med(kind, 'others_cores'):.2f} |"
        )
    lines += [
        "",
        "A round runs each side once, back to back, the order turning every round; speed / loop is the loop's "
        "seconds over the side's. Each round's seconds: "
        + "; ".join(f"{kind} " + " ".join(f"{s['seconds']:.2f}" for s in samples[kind]) for kind in samples),
        "",
    ]
    if memory:
        floor = memory["imports"]["one"]
        lines += [
            f"Memory, one sampled run each (every 50 ms; the pipeline's process is {floor['tree_rss_mb']:.0f} MB "
            "with its modules loaded and no work):",
            "",
            "| side | processes | tree PSS 1× | 10× | 10× / 1× | tree RSS 1× | 10× | 10× / 1× "
            "| largest process 1× | 10× | 10× / 1× | seconds 10× / 1× |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for kind, runs in memory.items():
            if kind == "imports":
                continue
            one, ten = runs["one"], runs["ten"]
            lines.append(
                f"| {LABELS[kind]} | {ten['processes']} | {one['tree_pss_mb']:.0f} | {ten['tree_pss_mb']:.0f} "
                f"| {ten['tree_pss_mb'] / one['tree_pss_mb']:.2f} "
                f"| {one['tree_rss_mb']:.0f} | {ten['tree_rss_mb']:.0f} "
                f"| {ten['tree_rss_mb'] / one['tree_rss_mb']:.2f} | {one['peak_mb']:.0f} | {ten['peak_mb']:.0f} "
                f"| {ten['peak_mb'] / one['peak_mb']:.2f} | {ten['seconds'] / one['seconds']:.2f} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
