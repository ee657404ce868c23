"""Benchmark: how fast a model server refuses an unknown model id offline.

    .venv/bin/python bench/model_failfast.py [--repeat 5]

A model server (`python -m model_server`, its own empty HF_HOME and models root) is asked to load
`nobody/no-such-model`, with HF_HUB_OFFLINE=0 (what `make run` starts it with: not offline) and with
HF_HUB_OFFLINE=1; the time to its 404 saying "not in the models root or the local Hugging Face cache".
Baseline: what a load did before it looked in the cache first, transformers' `AutoConfig.from_pretrained`
of the id in a fresh process (huggingface_hub retries the Hub five times). The machine has no network.

Prints a Markdown table and writes it to bench/out/model_failfast.md.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "scripts")]

from test_model_server import running_server  # noqa: E402

OUT = ROOT / "bench" / "out"
UNKNOWN = "nobody/no-such-model"


def unknown_load_s(offline: bool, repeat: int, base: Path) -> list[float]:
    env = {
        "HF_HOME": str(base / "hf"),
        "CONSTELLATION_MODELS_ROOT": str(base / "models"),
        "CONSTELLATION_MODEL_SERVER_TOKEN": "",
        "HF_HUB_OFFLINE": "1" if offline else "0",
        "TRANSFORMERS_OFFLINE": "1" if offline else "0",
    }
    (base / "models").mkdir(exist_ok=True)
    times = []
    with running_server(env, base / f"server-{offline}.log") as server, server.client() as http:
        for _ in range(repeat):
            start = time.perf_counter()
            answer = http.post(
                "/v2/repository/models/nobody--no-such-model/load",
                json={"parameters": {"source": UNKNOWN}},
                timeout=120,
            )
            times.append(time.perf_counter() - start)
            assert answer.status_code == 404, answer.text
            assert "not in the models root or the local Hugging Face cache" in answer.json()["error"]
    return times


def library_load_s(base: Path) -> float:
    """The id through transformers alone, as a load went before: the Hub's retries included."""
    code = (
        "import time; from transformers import AutoConfig; t = time.perf_counter()\n"
        "try:\n    AutoConfig.from_pretrained('" + UNKNOWN + "')\nexcept OSError:\n    pass\n"
        "print(time.perf_counter() - t)"
    )
    env = {**os.environ, "HF_HOME": str(base / "hf-library"), "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def row(what: str, times: list[float]) -> str:
    return f"| {what} | {statistics.median(times):.3f} | {min(times):.3f}–{max(times):.3f} | {len(times)} |"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    lines = ["| what | median s | range s | runs |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory(prefix="failfast-") as tmp:
        base = Path(tmp)
        online = unknown_load_s(False, args.repeat, base)
        lines.append(row("unknown id, model server load (HF_HUB_OFFLINE=0, the default)", online))
        lines.append(row("unknown id, model server load (HF_HUB_OFFLINE=1)", unknown_load_s(True, args.repeat, base)))
        lines.append(row("baseline: transformers AutoConfig of the id (the Hub's retries)", [library_load_s(base)]))
    table = "\n".join(lines)
    print(table)
    (OUT / "model_failfast.md").write_text(table + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
