"""The benchmark's baseline: the smallest Dagster job, served as code location `baseline`.

One op that returns 1, run in-process like `build_execute_job`, so that submit→SUCCESS of
this job is what Dagster itself costs on the stack: queueing, the daemon's dequeue, the run
worker process and its event writes, with no Constellation code at all.
"""

from __future__ import annotations

from dagster import JobDefinition, in_process_executor, job, op, repository


@op
def one() -> int:
    """Return 1."""
    return 1


@job(executor_def=in_process_executor, description="Baseline for bench/run.py: one op returning 1.")
def trivial_job() -> None:
    one()


@repository(name="baseline")
def baseline() -> list[JobDefinition]:
    return [trivial_job]
