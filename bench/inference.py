"""Benchmark: image classification through the model server vs the same pipeline in process.

    .venv/bin/python bench/inference.py [--images 128] [--repeat 5]
    .venv/bin/python bench/inference.py --server-from before=/tmp/old-checkout   # a second server, side by side

A randomly initialised ViT (hidden 384, 6 layers, 224×224 input: a ViT-Small-sized network) is
saved to a temporary models root; the model server (`python -m model_server`) loads it, and
the client (orchestrator.models.client, what model_inference uses) sends the images in
requests of 1 or 16. The baseline runs `transformers.pipeline` on the same files in this
process, with batch size 1 or 16 (opening and decoding them inside the clock, as the server does).
Every side runs once per round, in an order that rotates each round; the figures are medians.
`--server-from LABEL=DIR` adds a server run from another checkout's `model_server/` (e.g. the
commit before a change), so that the two are measured in the same session, interleaved.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
OUT = ROOT / "bench" / "out" / "inference.md"
MODEL = "bench-vit-small"
IN_PROCESS = "in process"


def make_model(folder: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    labels = {0: "Fire", 1: "Normal", 2: "Smoke"}
    config = ViTConfig(
        hidden_size=384,
        num_hidden_layers=6,
        num_attention_heads=6,
        intermediate_size=1536,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
    )
    ViTForImageClassification(config).save_pretrained(folder)
    ViTImageProcessor().save_pretrained(folder)


def make_images(folder: Path, count: int) -> list[Path]:
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        image = Image.new("RGB", (640, 480), ((i * 37) % 256, (i * 91) % 256, 120))
        ImageDraw.Draw(image).ellipse((50 + i % 200, 60, 300, 400), fill=(250, 120, 0))
        paths.append(folder / f"img_{i:04d}.jpg")
        image.save(paths[-1], quality=90)
    return paths


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(
    models_root: Path, port: int, checkout: Path = ROOT, batch: int = 16, extra_env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """`python -m model_server` from `checkout`, without a token (the bench's client sends none)."""
    env = {
        **os.environ,
        "CONSTELLATION_MODELS_ROOT": str(models_root),
        "CONSTELLATION_MODEL_SERVER_PORT": str(port),
        "HF_HUB_OFFLINE": "1",
        "CONSTELLATION_MODEL_SERVER_BATCH_SIZE": str(batch),
    }
    env.pop("CONSTELLATION_MODEL_SERVER_TOKEN", None)
    env.update(extra_env or {})
    env.pop("PYTHONPATH", None)
    process = subprocess.Popen(
        [sys.executable, "-m", "model_server"],
        cwd=checkout,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return wait_until_ready(process, port, 90, f"the model server from {checkout}")


def wait_until_ready(
    process: subprocess.Popen[bytes], port: int, timeout_s: float, what: str
) -> subprocess.Popen[bytes]:
    """`process` once the model server on `port` says it is ready; killed if it is not within `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{what} did not start")


def peak_rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) used so far by this process, or by process `pid` (from /proc)."""
    if pid is None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def through_server(url: str, images: list[bytes], batch: int, pid: int | None = None) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this client and of the server process `pid` together)."""
    from orchestrator.models.client import ModelServer

    with ModelServer(url) as server:
        cpu = cpu_seconds() + (cpu_seconds(pid) if pid else 0.0)
        start = time.perf_counter()
        for i in range(0, len(images), batch):
            server.classify(MODEL, images[i : i + batch], top_k=3)
        wall = time.perf_counter() - start
        return wall, cpu_seconds() + (cpu_seconds(pid) if pid else 0.0) - cpu


def in_process(classifier, paths: list[Path], batch: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process)."""
    from PIL import Image

    cpu = cpu_seconds()
    start = time.perf_counter()
    for i in range(0, len(paths), batch):
        opened = [Image.open(p).convert("RGB") for p in paths[i : i + batch]]
        classifier(opened, top_k=3, batch_size=batch)
    return time.perf_counter() - start, cpu_seconds() - cpu


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5, help="rounds; every side runs once per round")
    parser.add_argument("--batches", default="1,16", help="request sizes, comma-separated (default 1,16)")
    parser.add_argument(
        "--server-from",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="also run the model server of another checkout, labelled LABEL",
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="LABEL:NAME=VALUE",
        help="an environment variable for server LABEL (a new label: this checkout's server)",
    )
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    checkouts = {"server": ROOT}
    for given in args.server_from:
        label, _, folder = given.partition("=")
        checkouts[label] = Path(folder).resolve()
    server_env: dict[str, dict[str, str]] = {}
    for given in args.server_env:
        label, _, setting = given.partition(":")
        name, _, value = setting.partition("=")
        server_env.setdefault(label, {})[name] = value
        checkouts.setdefault(label, ROOT)
    os.environ["HF_HUB_OFFLINE"] = "1"
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers it started on the way out
    from transformers import pipeline

    from orchestrator.models.client import ModelServer

    started = time.strftime("%Y-%m-%d %H:%M")
    load_before = os.getloadavg()
    servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
    peaks: dict[str, float | None] = {}
    times: dict[tuple[str, int], list[float]] = {}
    cpus: dict[tuple[str, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="constellation-bench-") as tmp:
        base = Path(tmp)
        make_model(base / "models" / MODEL)
        paths = make_images(base / "images", args.images)
        images = [p.read_bytes() for p in paths]
        try:
            for label, checkout in checkouts.items():
                port = free_port()
                servers[label] = (
                    start_server(base / "models", port, checkout, max(batches), server_env.get(label, {})),
                    f"http://127.0.0.1:{port}",
                )
                with ModelServer(servers[label][1]) as client:
                    client.load(MODEL, MODEL, "image-classification")
                through_server(servers[label][1], images[:16], 16)  # warm-up, not counted
            classifier = pipeline("image-classification", model=str(base / "models" / MODEL))
            in_process(classifier, paths[:16], 16)
            sides = [IN_PROCESS, *servers]
            for round_ in range(args.repeat):
                for batch in batches:
                    shift = round_ % len(sides)
                    for side in sides[shift:] + sides[:shift]:
                        took, cpu = (
                            in_process(classifier, paths, batch)
                            if side == IN_PROCESS
                            else through_server(servers[side][1], images, batch, servers[side][0].pid)
                        )
                        times.setdefault((side, batch), []).append(took)
                        cpus.setdefault((side, batch), []).append(cpu)
                print(
                    f"round {round_ + 1}: "
                    + ", ".join(f"{s} b{b} {args.images / t[-1]:.1f}/s" for (s, b), t in times.items()),
                    flush=True,
                )
            peaks = {label: peak_rss_mb(process.pid) for label, (process, _) in servers.items()}
        finally:
            for process, _ in servers.values():
                process.terminate()
                process.wait(30)
    report = render(times, cpus, args, batches, list(servers), peaks, started, load_before)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(report)
    print(report)
    return 0


def render(
    times: dict[tuple[str, int], list[float]],
    cpus: dict[tuple[str, int], list[float]],
    args: argparse.Namespace,
    batches: list[int],
    servers: list[str],
    peaks: dict[str, float | None],
    started: str,
    load_before: tuple[float, float, float],
) -> str:
    n = args.images
    load_after = os.getloadavg()
    rows = [
        "## Inference: through the model server vs in process",
        "",
        f"{n} JPEGs of 640×480, a random ViT-Small-sized classifier (224×224 input), CPU, median of "
        f"{args.repeat} interleaved rounds; Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"{started}; load average (1 min) {load_before[0]:.1f} at the start, {load_after[0]:.1f} at the end.",
        "",
        "| batch | side | images/s | throughput / in process | time / in process | CPU ms / image | "
        "rounds (images/s) |",
        "|---:|---|---:|---:|---:|---:|---|",
    ]
    for batch in batches:
        local = statistics.median(times[(IN_PROCESS, batch)])
        for side in [IN_PROCESS, *servers]:
            taken = times[(side, batch)]
            median = statistics.median(taken)
            ratios = "" if side == IN_PROCESS else f"{local / median:.2f}"
            each = ", ".join(f"{n / t:.1f}" for t in taken)
            cpu = statistics.median(cpus[(side, batch)]) / n * 1000
            rows.append(
                f"| {batch} | {side} | {n / median:.1f} | {ratios} | "
                f"{'' if side == IN_PROCESS else f'{median / local:.2f}'} | {cpu:.0f} | {each} |"
            )
    # Paired per round: each round's ratio, then their median (a busy moment hits both sides of a round alike).
    rows += ["", "Per-round throughput ratio (server / in process, same round), median [min–max]:", ""]
    for batch in batches:
        for side in servers:
            paired = [b / a for a, b in zip(times[(side, batch)], times[(IN_PROCESS, batch)], strict=True)]
            rows.append(
                f"- batch {batch}, {side}: {statistics.median(paired):.2f} [{min(paired):.2f}–{max(paired):.2f}]"
            )
    rows += [
        "",
        "CPU ms / image: CPU time (user + system) per image, median of the rounds; for a server, the bench "
        "process (the client) and the server process together. Other work on the machine slows the wall "
        "clock of both sides (their threads wait for a CPU) more than it changes this.",
    ]
    memory = ", ".join(f"{label} {peak:.0f} MB" for label, peak in peaks.items() if peak is not None)
    if memory:
        rows += ["", f"Server peak RSS (VmHWM) at the end: {memory}."]
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.exit(main())
