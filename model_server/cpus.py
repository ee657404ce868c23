"""How many CPUs the server may use, and torch's threads set to match, once per process.

torch sizes its intra-op pool from the machine's cores, not from what the process may use: in a
container limited to 2 CPUs on a 32-core host it would start 32 threads that take turns on 2
CPUs, each parallel region waiting for the slowest. So the server counts the CPUs of its affinity
mask, capped by the cgroup's CPU quota (a container's `--cpus`, a pod's CPU limit), and gives torch
that many threads (CONSTELLATION_MODEL_SERVER_TORCH_THREADS, or OMP_NUM_THREADS, say otherwise).
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

log = logging.getLogger(__name__)
_configured: int | None = None
_setting: int | None = None  # CONSTELLATION_MODEL_SERVER_TORCH_THREADS, given by the server at start


def cgroup_cpu_quota(root: Path = Path("/sys/fs/cgroup")) -> float | None:
    """CPUs the cgroup's quota allows (cgroup v2 `cpu.max`, or v1 `cpu.cfs_quota_us`); None when unlimited."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    try:
        quota_us = int((root / "cpu" / "cpu.cfs_quota_us").read_text())
        period_us = int((root / "cpu" / "cpu.cfs_period_us").read_text())
        return quota_us / period_us if quota_us > 0 and period_us > 0 else None
    except (OSError, ValueError):
        return None


def available_cpus() -> int:
    """The CPUs this process may run on: its affinity mask, capped by the cgroup's quota (rounded up), at least 1."""
    try:
        count = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        count = os.cpu_count() or 1
    quota = cgroup_cpu_quota()
    if quota is not None:
        count = min(count, math.ceil(quota))
    return max(1, count)


def configure_torch(threads: int | None = None) -> int:
    """Set torch's intra-op threads (once per process) and return how many it uses.

    `threads`: the setting; unset, OMP_NUM_THREADS when it is set (torch read it already), else the
    available CPUs. Inter-op threads: 1 (the server runs one forward pass per model at a time; eager
    models use no inter-op parallelism), when torch has not started its inter-op pool yet.
    """
    global _configured
    import torch

    if _configured is not None and threads is None:
        return _configured
    if threads is None and os.environ.get("OMP_NUM_THREADS", "").strip().isdigit():
        threads = torch.get_num_threads()
    threads = threads or available_cpus()
    torch.set_num_threads(threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already started (or already set): torch allows it once, before any inter-op work
        pass
    _configured = threads
    log.info("torch uses %d threads (%d CPUs available to this process)", threads, available_cpus())
    return threads


def configure_torch_when_used(threads: int | None) -> None:
    """Remember the setting for torch_ready: the server starts without importing torch and transformers,
    which only the transformers models use (start to ready 3.20 → 1.08 s, peak memory 264 → 67 MiB:
    bench/RESULTS.md, "Where the suite's time goes")."""
    global _setting
    _setting = threads


def torch_ready() -> int:
    """Import torch if not yet, set its threads from the server's setting once, and return how many it uses."""
    return _configured if _configured is not None else configure_torch(_setting)
