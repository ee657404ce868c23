"""Load: 200 concurrent submissions through the gateway, retries included; none lost, none launched twice.

Every Dagster run starts a run-worker process that costs about 1.5 s of CPU, so on a two-core
machine 200 distinct runs take over three minutes. The 200 submissions therefore carry 25
Idempotency-Keys, each sent 8 times at once in random order, as clients retrying would: 200
answers and 25 runs, every one of which must complete.
"""

from __future__ import annotations

import asyncio
import random
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator

import httpx
import pytest

from api.dagster_client import IDEMPOTENCY_TAG
from harness import Stack, start_stack, stop_stack

pytestmark = [pytest.mark.e2e, pytest.mark.slow]  # about 40 s on two quiet cores

KEYS, RETRIES = 25, 8
CHEAP = {
    "instructions": [
        {
            "operation": "dict_to_list",
            "parameters": {"data": {"operation": "import_from_local", "parameters": {"path": "samples"}}},
        }
    ]
}
RUNS = """query { runsOrError(filter: {pipelineName: "build_execute_job"}) {
    ... on Runs { results { runId status tags { key value } } } } }"""
ENDED = ("SUCCESS", "FAILURE", "CANCELED")


@pytest.fixture(scope="module")
def load_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """A stack of its own, so that every run in Dagster is one of this test's."""
    running = start_stack(tmp_path_factory.mktemp("load_stack"))
    yield running
    stop_stack(running)


async def submit_all(api_url: str, keys: list[str]) -> list[httpx.Response]:
    limits = httpx.Limits(max_connections=len(keys))  # every submission in flight at once
    async with httpx.AsyncClient(base_url=api_url, timeout=120, limits=limits) as client:
        return await asyncio.gather(
            *(client.post("/execute", json=CHEAP, headers={"Idempotency-Key": key}) for key in keys)
        )


def runs_in_dagster(stack: Stack) -> list[dict]:
    answer = httpx.post(stack.dagster_url + "/graphql", json={"query": RUNS}, timeout=30).json()
    return answer["data"]["runsOrError"]["results"]


def wait_until_all_end(stack: Stack, expected: int, timeout_s: float) -> list[dict]:
    """One GraphQL query a second (polling every run would load the machine under test)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = runs_in_dagster(stack)
        if len(runs) >= expected and all(run["status"] in ENDED for run in runs):
            return runs
        time.sleep(1)
    statuses = sorted(run["status"] for run in runs)
    raise AssertionError(f"runs still going after {timeout_s} s: {statuses}\n{stack.log_tail()}")


def test_200_concurrent_submissions_make_one_run_per_key_and_every_run_succeeds(load_stack: Stack):
    prefix = f"load-{uuid.uuid4().hex[:8]}"
    keys = [f"{prefix}-{i}" for i in range(KEYS)] * RETRIES
    random.shuffle(keys)

    started = time.monotonic()
    answers = asyncio.run(submit_all(load_stack.api_url, keys))
    submitted_s = time.monotonic() - started

    refused = [(a.status_code, a.text) for a in answers if a.status_code != 200]
    assert not refused, f"{len(refused)} of {len(answers)} submissions refused, e.g. {refused[:3]}"
    by_key: dict[str, list[dict]] = defaultdict(list)
    for key, answer in zip(keys, answers, strict=True):
        by_key[key].append(answer.json())
    for key, launched in by_key.items():
        assert len({a["run_id"] for a in launched}) == 1, (key, launched)  # retries got the same run
        assert sorted(a["replayed"] for a in launched) == [False] + [True] * (RETRIES - 1), (key, launched)
    run_of = {key: launched[0]["run_id"] for key, launched in by_key.items()}
    assert len(set(run_of.values())) == KEYS

    runs = wait_until_all_end(load_stack, KEYS, timeout_s=240)
    finished_s = time.monotonic() - started
    # Dagster holds exactly one run per key (none lost, none twice), the one the gateway answered.
    in_dagster = {run["runId"]: run for run in runs}
    assert len(in_dagster) == KEYS
    keyed = {t["value"]: run["runId"] for run in runs for t in run["tags"] if t["key"] == IDEMPOTENCY_TAG}
    assert keyed == run_of
    assert sorted(run["status"] for run in runs) == ["SUCCESS"] * KEYS
    print(f"\n{len(keys)} submissions answered in {submitted_s:.1f} s; {KEYS} runs ended by {finished_s:.1f} s")
