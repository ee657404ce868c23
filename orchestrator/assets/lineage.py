"""What a run read, wrote and compared, as events in Dagster's asset catalog.

An import is an observation of its source (`["s3", bucket, prefix]`, `["database", connection,
table]`, ...); an export is a materialization of its destination, with row and file counts
and the schema; a comparison is a materialization of `["comparisons", *dataset]` whose
metadata holds the metrics table and names the dataset it was made on. So the catalog answers
"which models were compared on this dataset, and how did they do", run after run.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any
from urllib.parse import urlsplit

from dagster import AssetKey, AssetMaterialization, AssetObservation, MetadataValue, TableRecord

from orchestrator.datasets import Comparison, Exported, FileDict, Table
from orchestrator.engine import Node

IMPORTS = {"import_from_local", "import_from_s3", "import_from_url", "import_from_google_drive",
           "import_from_database"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def asset_events(node: Node, output: Any, run_id: str) -> list[AssetMaterialization | AssetObservation]:
    """The catalog events for one finished instruction (none for most)."""
    if node.operation in IMPORTS:
        key = source_key(node)
        return [AssetObservation(asset_key=key, description=f"read by run {run_id}", metadata=_dataset_facts(output))]
    if isinstance(output, Exported):
        return [AssetMaterialization(asset_key=destination_key(node, output), description=f"written by run {run_id}",
                                     metadata=_export_facts(output))]
    if isinstance(output, Comparison):
        dataset = dataset_of(node)
        key = AssetKey(["comparisons", *(dataset.path if dataset else ["unknown"])])
        return [AssetMaterialization(asset_key=key, description=output.report.get("verdict", ""),
                                     metadata=_comparison_facts(output, dataset, run_id))]
    return []


def source_key(node: Node) -> AssetKey:
    """Where an import read from, as an asset key."""
    given = node.literals
    if node.operation == "import_from_s3":
        where = given.get("key") or given.get("prefix") or ""
        return _key("s3", given["bucket"], *where.strip("/").split("/"))
    if node.operation == "import_from_database":
        what = given.get("table") or "query-" + hashlib.sha256(str(given.get("query")).encode()).hexdigest()[:12]
        return _key("database", given["connection"], what)
    if node.operation == "import_from_google_drive":
        return _key("google_drive", given.get("file_id") or given.get("folder_id") or "")
    if node.operation == "import_from_url":
        url = urlsplit(str(given.get("url", "")))
        return _key("url", url.hostname or "", *url.path.strip("/").split("/"))
    return _key("local", *str(given.get("path", "")).strip("/").split("/"))


def destination_key(node: Node, exported: Exported) -> AssetKey:
    """Where an export wrote, without the run's own folder: one asset, written again by each run."""
    given = node.literals
    if node.operation == "export_to_s3":
        bucket = given.get("bucket") or exported.destination.removeprefix("s3://").split("/")[0]
        return _key("s3", bucket, *(given.get("prefix") or "constellation").strip("/").split("/"))
    if node.operation == "export_to_database":
        return _key("database", given["connection"], given["table"])
    if node.operation == "export_to_local":
        return _key("local_output", given.get("folder", "constellation"))
    return _key("export", node.operation)


def dataset_of(node: Node) -> AssetKey | None:
    """The source the first model of a comparison read: the import at the bottom of its inputs."""
    seen: list[Node] = [node]
    while seen:
        current = seen.pop(0)
        if current.operation in IMPORTS:
            return source_key(current)
        seen.extend(current.children())
    return None


def _key(*parts: str) -> AssetKey:
    return AssetKey([_UNSAFE.sub("_", p)[:100] or "_" for p in parts if p is not None and p != ""] or ["_"])


def _dataset_facts(output: Any) -> dict[str, Any]:
    if isinstance(output, Table):
        return {"rows": output.count, "columns": MetadataValue.json(output.columns)}
    if isinstance(output, FileDict):
        return {"files": len(output)}
    return {}


def _export_facts(exported: Exported) -> dict[str, Any]:
    facts: dict[str, Any] = {"destination": exported.destination, "items": len(exported.items)}
    rows = sum(int(i.get("rows", 0)) for i in exported.items if isinstance(i, dict))
    if rows:
        facts["rows"] = rows
    return facts


def _comparison_facts(comparison: Comparison, dataset: AssetKey | None, run_id: str) -> dict[str, Any]:
    report = comparison.report
    models = report.get("models", [])
    columns = [k for k, v in (models[0] if models else {}).items() if isinstance(v, int | float | str | None)]
    facts: dict[str, Any] = {
        "run_id": run_id,
        "task": str(report.get("task", "")),
        "inputs": int(report.get("inputs", 0)),
        "models": MetadataValue.json([m.get("model") for m in models]),
        "verdict": MetadataValue.text(str(report.get("verdict", ""))),
        "metrics": MetadataValue.table([
            TableRecord({k: m.get(k) if isinstance(m.get(k), int | float | str) else None for k in columns})
            for m in models
        ]),
    }
    if dataset is not None:
        facts["dataset"] = MetadataValue.asset(dataset)
    return facts
