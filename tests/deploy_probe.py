"""Do in this interpreter what one image's processes do, as if only the image's packages were installed.

    DEPLOY_PROBE_ALLOWED='["dagster", ...]' python tests/deploy_probe.py PROFILE

PROFILE is a deploy/docker/requirements.py profile; DEPLOY_PROBE_ALLOWED lists the distributions
its image gets (tests/project/test_deploy.py works them out). An import from any other installed
distribution fails with ModuleNotFoundError, as it would in the image (importlib.util.find_spec
says None): a hard import fails the probe, an optional one is skipped as it would be there. Prints JSON
{"facts": {...}, "refused": [...], "distributions": [...]}: what the process found (e.g. the Dagster
instance DAGSTER_HOME/dagster.yaml makes), the distributions it was refused, the ones it loaded.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import io
import json
import os
import pkgutil
import re
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def instance_facts() -> dict[str, Any]:
    """Load DAGSTER_HOME's instance, query its storage once, and describe it."""
    from dagster import DagsterInstance

    instance = DagsterInstance.get()
    try:
        instance.get_runs_count()  # a real query, through the PostgreSQL driver
        queue = instance.run_coordinator.get_run_queue_config()
        launcher = instance.run_launcher
        return {
            "storage": sorted(
                {
                    type(s).__name__
                    for s in (instance.run_storage, instance.event_log_storage, instance.schedule_storage)
                }
            ),
            "run_coordinator": type(instance.run_coordinator).__name__,
            "max_concurrent_runs": queue.max_concurrent_runs,
            "dequeue_interval_seconds": getattr(instance.run_coordinator, "dequeue_interval_seconds", None),
            "run_launcher": type(launcher).__name__,
            "launcher_networks": list(getattr(launcher, "networks", [])),
            "launcher_env_vars": list(getattr(launcher, "env_vars", None) or []),
            "launcher_volumes": list((getattr(launcher, "container_kwargs", None) or {}).get("volumes", [])),
            "run_monitoring": instance.run_monitoring_enabled,
            "run_retries": instance.run_retries_enabled,
            "run_retries_max": instance.run_retries_max_retries,
            "retry_on_op_failure": instance.run_retries_retry_on_asset_or_op_failure,
            "telemetry": instance.telemetry_enabled,
        }
    finally:
        instance.dispose()


def probe_dagster() -> dict[str, Any]:
    """dagster-webserver and dagster-daemon: their entry points, and the instance they load."""
    importlib.import_module("dagster_webserver.cli")
    importlib.import_module("dagster._daemon.cli")
    return instance_facts()


def probe_code_server() -> dict[str, Any]:
    """`dagster api grpc -m orchestrator.assets.repository`, and a run worker's instance."""
    importlib.import_module("dagster._cli.api")
    repository = importlib.import_module("orchestrator.assets.repository")
    job = repository.main.get_job("build_execute_job")
    return {"job": job.name, **instance_facts()}


def probe_gateway() -> dict[str, Any]:
    """`uvicorn api.main:app`: the app, and every module of the gateway."""
    import uvicorn  # noqa: F401  (the server the image runs)

    import api

    # api.dagster_ui wraps `make run`'s Dagster webserver; the gateway image never runs it.
    names = [m.name for m in pkgutil.walk_packages(api.__path__, "api.") if m.name != "api.dagster_ui"]
    for name in names:
        importlib.import_module(name)
    return {"modules": len(names)}


def probe_model_server() -> dict[str, Any]:
    """`python -m model_server`, then what a load and an inference request do, on a tiny model."""
    from PIL import Image

    from model_server import __main__ as _main  # noqa: F401
    from model_server.registry import ModelRegistry
    from tiny_models import make_image_classifier

    with tempfile.TemporaryDirectory() as tmp:
        make_image_classifier(Path(tmp) / "tiny")
        registry = ModelRegistry(Path(tmp), batch_size=2)
        registry.load("tiny", "tiny", "image-classification")
        image = io.BytesIO()
        Image.new("RGB", (40, 30), (200, 40, 10)).save(image, "JPEG")
        _, predictions = registry.classify("tiny", [image.getvalue()], top_k=1)
        registry.unload("tiny")
    return {"predictions": len(predictions)}


PROBES = {
    "dagster": probe_dagster,
    "code_server": probe_code_server,
    "gateway": probe_gateway,
    "model_server": probe_model_server,
}


def owners() -> dict[str, str]:
    """Each installed file's distribution (normalized name)."""
    owner: dict[str, str] = {}
    for dist in metadata.distributions():
        name = re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower()
        for file in dist.files or []:
            owner[os.path.abspath(dist.locate_file(file))] = name
    return owner


class ImageOnly(importlib.abc.MetaPathFinder):
    """Python's path finder, blind to the files of installed distributions the image does not have."""

    def __init__(self, allowed: set[str], owner: dict[str, str]):
        self.allowed, self.owner, self.refused = allowed | {"constellation"}, owner, set()

    def find_spec(self, fullname, path, target=None):
        spec = importlib.machinery.PathFinder.find_spec(fullname, path, target)
        origin = spec and spec.origin and self.owner.get(os.path.abspath(spec.origin))
        if origin and origin not in self.allowed:
            self.refused.add(origin)
            return None  # as if not installed: the import fails, importlib.util.find_spec says None
        return spec

    def find_distributions(self, context=None):
        """importlib.metadata sees only the image's distributions too."""
        context = context or metadata.DistributionFinder.Context()
        for dist in importlib.machinery.PathFinder.find_distributions(context):
            if re.sub(r"[-_.]+", "-", dist.metadata["Name"]).lower() in self.allowed:
                yield dist

    def invalidate_caches(self) -> None:
        importlib.machinery.PathFinder.invalidate_caches()


def main() -> int:
    profile = sys.argv[1]
    owner = owners()
    guard = ImageOnly(set(json.loads(os.environ["DEPLOY_PROBE_ALLOWED"])), owner)
    sys.meta_path[sys.meta_path.index(importlib.machinery.PathFinder)] = guard
    before = set(sys.modules)
    facts = PROBES[profile]()
    loaded = {
        owner.get(os.path.abspath(module.__file__))
        for name, module in list(sys.modules.items())
        if name not in before and getattr(module, "__file__", None)
    }
    report = {"facts": facts, "refused": sorted(guard.refused), "distributions": sorted(filter(None, loaded))}
    json.dump(report, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
