"""Benchmark: image classification through the model server vs the same pipeline in process.

    .venv/bin/python bench/inference.py [--images 256] [--repeat 3]

A randomly initialised ViT (hidden 384, 6 layers, 224×224 input: a ViT-Small-sized network) is
saved to a temporary models root; the model server (`python -m model_server`) loads it, and
the client (orchestrator.data.model_server, what model_inference uses) sends the images in
requests of 1 or 16. The baseline runs `transformers.pipeline` on the same files in this
process, with batch size 1 or 16. Ratios are server time over in-process time.
"""

from __future__ import annotations

import argparse
import os
import platform
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


def make_model(folder: Path) -> None:
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor

    labels = {0: "Fire", 1: "Normal", 2: "Smoke"}
    config = ViTConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=6, intermediate_size=1536,
                       id2label=labels, label2id={v: k for k, v in labels.items()})
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


def start_server(models_root: Path, port: int) -> subprocess.Popen[bytes]:
    env = {**os.environ, "CONSTELLATION_MODELS_ROOT": str(models_root), "CONSTELLATION_MODEL_SERVER_PORT": str(port),
           "HF_HUB_OFFLINE": "1", "CONSTELLATION_MODEL_SERVER_BATCH_SIZE": "16"}
    process = subprocess.Popen([sys.executable, "-m", "model_server"], cwd=ROOT, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return process
        except httpx.HTTPError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError("the model server did not start")


def through_server(url: str, images: list[bytes], batch: int) -> float:
    from orchestrator.data.model_server import ModelServer

    with ModelServer(url) as server:
        start = time.perf_counter()
        for i in range(0, len(images), batch):
            server.classify(MODEL, images[i:i + batch], top_k=3)
        return time.perf_counter() - start


def in_process(classifier, paths: list[Path], batch: int) -> float:
    from PIL import Image

    start = time.perf_counter()
    for i in range(0, len(paths), batch):
        opened = [Image.open(p).convert("RGB") for p in paths[i:i + batch]]
        classifier(opened, top_k=3, batch_size=batch)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from transformers import pipeline

    with tempfile.TemporaryDirectory(prefix="constellation-bench-") as tmp:
        base = Path(tmp)
        make_model(base / "models" / MODEL)
        paths = make_images(base / "images", args.images)
        images = [p.read_bytes() for p in paths]
        port = free_port()
        server = start_server(base / "models", port)
        url = f"http://127.0.0.1:{port}"
        try:
            from orchestrator.data.model_server import ModelServer

            with ModelServer(url) as client:
                client.load(MODEL, MODEL, "image-classification")
            classifier = pipeline("image-classification", model=str(base / "models" / MODEL))
            through_server(url, images[:16], 16)  # warm-up, not counted
            in_process(classifier, paths[:16], 16)
            times: dict[tuple[str, int], list[float]] = {}
            for _ in range(args.repeat):
                for batch in (1, 16):
                    times.setdefault(("server", batch), []).append(through_server(url, images, batch))
                    times.setdefault(("in-process", batch), []).append(in_process(classifier, paths, batch))
                    print({k: round(v[-1], 2) for k, v in times.items()}, flush=True)
        finally:
            server.terminate()
            server.wait(30)
    report = render(times, args)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(report)
    print(report)
    return 0


def render(times: dict[tuple[str, int], list[float]], args: argparse.Namespace) -> str:
    n = args.images
    rows = ["## Inference: through the model server vs in process",
            "",
            f"{n} JPEGs of 640×480, a random ViT-Small-sized classifier (224×224 input), CPU, median of "
            f"{args.repeat} interleaved runs; Python {platform.python_version()}, {os.cpu_count()} CPUs, "
            f"{time.strftime('%Y-%m-%d')}.",
            "",
            "| batch | server images/s | in-process images/s | server time / in-process time |",
            "|---:|---:|---:|---:|"]
    for batch in (1, 16):
        server, local = statistics.median(times[("server", batch)]), statistics.median(times[("in-process", batch)])
        rows.append(f"| {batch} | {n / server:.1f} | {n / local:.1f} | {server / local:.2f} |")
    return "\n".join(rows) + "\n"


if __name__ == "__main__":
    sys.exit(main())
