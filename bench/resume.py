"""Benchmark: what resuming a failed run saves when only the last of three models failed.

    .venv/bin/python bench/resume.py [--images 200]

One local stack (tests/conftest.py's launcher). The pipeline deploys and runs three image
classifiers over the same import; the third model's folder is there but empty (a launch checks that
the model server finds each model, not what its folder holds), so its deployment fails after the
first two inferences finished. The model's files then arrive and the run is resumed
(POST /runs/{id}/retry): the import and the first two inferences are reused, the deployments
run again (never reused) and the third model runs. Compared with running the whole pipeline
again from scratch after the fix, side by side.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "scripts")]

from conftest import start_stack, stop_stack  # noqa: E402
from tiny_models import make_image_classifier  # noqa: E402

MODELS = ["bench-a", "bench-b", "bench-c"]


def pipeline() -> dict:
    data = {"operation": "import_from_local", "parameters": {"path": "many"}}
    steps = []
    for model in MODELS:
        steps.append({"operation": "deploy_model", "parameters": {"model": model}})
        steps.append({"operation": "model_inference", "parameters": {"model": model, "batch_size": 16, "data": data}})
    return {"instructions": steps}


def timed(stack, client, post) -> tuple[float, dict]:
    start = time.perf_counter()
    run = stack.wait_for_run(post().json()["run_id"], timeout_s=600)
    return time.perf_counter() - start, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="constellation-bench-resume-") as tmp:
        base = Path(tmp)
        models = base / "models"
        for i, model in enumerate(MODELS[:2]):
            make_image_classifier(models / model, seed=i, image_size=64, hidden=64, layers=2)
        make_image_classifier(base / "later" / MODELS[2], seed=2, image_size=64, hidden=64, layers=2)
        stack = start_stack(base / "stack", {"CONSTELLATION_MODELS_ROOT": str(models), "HF_HUB_OFFLINE": "1"})
        try:
            many = stack.data_root / "many"
            many.mkdir()
            sample = next((stack.data_root / "samples" / "Fire").iterdir()).read_bytes()
            for i in range(args.images):
                (many / f"{i:05d}.jpg").write_bytes(sample)
            resumed, fresh, failed = [], [], []
            with stack.client() as client:
                for _ in range(args.repeat):
                    shutil.rmtree(models / MODELS[2], ignore_errors=True)
                    (models / MODELS[2]).mkdir()
                    took, run = timed(stack, client, lambda: client.post("/execute", json=pipeline()))
                    assert run["run_status"] == "FAILURE", run
                    failed.append(took)
                    shutil.copytree(base / "later" / MODELS[2], models / MODELS[2], dirs_exist_ok=True)
                    parent = run["run_id"]
                    took, run = timed(stack, client, lambda: client.post(f"/runs/{parent}/retry"))  # noqa: B023
                    assert run["run_status"] == "SUCCESS", run
                    reused = sum(i["state"] == "reused" for i in run["instructions"])
                    resumed.append(took)
                    took, run = timed(stack, client, lambda: client.post("/execute", json=pipeline()))
                    assert run["run_status"] == "SUCCESS", run
                    fresh.append(took)
                    print(
                        f"failed {failed[-1]:.2f} s, resumed {resumed[-1]:.2f} s ({reused} reused), "
                        f"from scratch {fresh[-1]:.2f} s",
                        flush=True,
                    )
        finally:
            stop_stack(stack)
    r, f = statistics.median(resumed), statistics.median(fresh)
    print(
        f"\n| {args.images} images, 3 models | resumed | from scratch | resumed / from scratch |\n"
        f"|---|---:|---:|---:|\n| submit→SUCCESS, median of {args.repeat} | {r:.2f} s | {f:.2f} s | {r / f:.2f} |"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
