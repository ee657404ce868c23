"""The README is the user's first contact: its commands work as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness import Stack
from op_reference import BEGIN, END, reference

README = Path(__file__).resolve().parents[2] / "README.md"
BIN = Path(sys.executable).parent


def bash_blocks() -> list[str]:
    return re.findall(r"```bash\n(.*?)```", README.read_text(), re.DOTALL)


def test_readme_leads_with_the_two_commands():
    first = bash_blocks()[0]
    assert [line.split("#")[0].strip() for line in first.strip().splitlines()] == ["make run", "make test"]


def test_operation_reference_matches_the_declarations():
    text = README.read_text()
    section = text[text.index(BEGIN) : text.index(END) + len(END)]
    assert section == reference(), "the README's operation table is stale: run `make readme`"


@pytest.mark.e2e
def test_try_it_commands_work_against_the_stack(stack: Stack, tmp_path: Path):
    blocks = [b for b in bash_blocks() if "localhost:$PORT" in b]
    assert len(blocks) == 3 and "localhost:8000" not in "".join(blocks)
    # The user's terminal: the port `make run` was given, and the first block's PORT line already run there.
    [port_line] = [line for line in blocks[0].splitlines() if line.startswith("PORT=")]
    env = {**os.environ, "CONSTELLATION_API_PORT": stack.api_url.rsplit(":", 1)[1]}
    outputs = []
    for block in blocks:
        script = f"set -euo pipefail\n{port_line}\n" + block.replace(".venv/bin/", f"{BIN}/")
        done = subprocess.run(
            ["bash", "-c", script], capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env
        )
        assert done.returncode == 0, done.stderr
        outputs.append(done.stdout)
    launched, followed, compared = outputs
    assert "accuracy" in compared and ("significant" in compared or "tie" in compared), compared
    page = (tmp_path / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "fire-vit-b" in page
    assert json.loads(launched)["status"] == "success"
    status, end = json.JSONDecoder().raw_decode(followed)
    results = json.loads(followed[end:])
    assert status["run_status"] == "SUCCESS", status
    assert [r["operation"] for r in results["results"]] == ["dict_to_list"]
