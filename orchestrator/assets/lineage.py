"""What a run read, wrote and compared, as events in Dagster's asset catalog.

An import is an observation of its source (`["s3", bucket, prefix]`, `["database", connection,
table]`, ...); an export is a materialization of its destination, with row and file counts
and the schema; a comparison is a materialization of `["comparisons", *dataset]` whose
metadata holds the metrics table and names the dataset it was made on. So the catalog answers
"which models were compared on this dataset, and how did they do", run after run.

A comparison's materialization also holds its `fingerprint` (the digest of the exact data, see
orchestrator/compare/fingerprint.py) and `comparison`, a JSON summary (dataset, fingerprint,
headline metric, each model's value with its interval and rank, the gate, the verdict, the
instruction's path): the history the gateway's GET /comparisons and leaderboard read, and
`earlier_comparisons` finds for a report.
"""

from __future__ import annotations

import re
from typing import Any

from dagster import AssetKey, AssetMaterialization, AssetObservation, DagsterInstance, MetadataValue, TableRecord

from orchestrator.datasets import Comparison, Exported, FileDict, Table
from orchestrator.engine import Catalog, Node, Operation

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def asset_events(
    catalog: Catalog, node: Node, output: Any, run_id: str
) -> list[AssetMaterialization | AssetObservation]:
    """The catalog events for one finished instruction (none for most).

    What an operation reads or writes is its catalog entry's `reads` / `writes` (declared with
    `reads_from` / `writes_to` beside the op); a comparison is known by its output's type.
    """
    operation = catalog[node.operation]
    if operation.reads is not None:
        key = _key(*operation.reads(node.literals, output))
        return [AssetObservation(asset_key=key, description=f"read by run {run_id}", metadata=_dataset_facts(output))]
    if isinstance(output, Exported):
        return [
            AssetMaterialization(
                asset_key=destination_key(operation, node, output),
                description=f"written by run {run_id}",
                metadata=_export_facts(output),
            )
        ]
    if isinstance(output, Comparison):
        dataset = dataset_of(catalog, node)
        key = AssetKey(["comparisons", *(dataset.path if dataset else ["unknown"])])
        return [
            AssetMaterialization(
                asset_key=key,
                description=output.report.get("verdict", ""),
                metadata=_comparison_facts(output, dataset, run_id, node.path),
            )
        ]
    return []


def destination_key(operation: Operation, node: Node, exported: Exported) -> AssetKey:
    """Where an export wrote, without the run's own folder: one asset, written again by each run."""
    if operation.writes is not None:
        return _key(*operation.writes(node.literals, exported))
    return _key("export", node.operation)


def dataset_of(catalog: Catalog, node: Node) -> AssetKey | None:
    """The source the first model of a comparison read: the import at the bottom of its inputs."""
    seen: list[Node] = [node]
    while seen:
        current = seen.pop(0)
        reads = catalog[current.operation].reads
        if reads is not None:
            return _key(*reads(current.literals, None))
        seen.extend(current.children())
    return None


def metrics_table(report: dict[str, Any]) -> list[TableRecord]:
    """A comparison's metrics, a row per model: each plain value of the report's models (others as null)."""
    models = report.get("models", [])
    columns = [k for k, v in (models[0] if models else {}).items() if isinstance(v, int | float | str | None)]
    return [
        TableRecord({k: m.get(k) if isinstance(m.get(k), int | float | str) else None for k in columns}) for m in models
    ]


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


def _comparison_facts(comparison: Comparison, dataset: AssetKey | None, run_id: str, path: str = "") -> dict[str, Any]:
    report = comparison.report
    models = report.get("models", [])
    facts: dict[str, Any] = {
        "run_id": run_id,
        "task": str(report.get("task", "")),
        "inputs": int(report.get("inputs", 0)),
        "models": MetadataValue.json([m.get("model") for m in models]),
        "verdict": MetadataValue.text(str(report.get("verdict", ""))),
        "metrics": MetadataValue.table(metrics_table(report)),
    }
    if dataset is not None:
        facts["dataset"] = MetadataValue.asset(dataset)
    if report.get("dataset_fingerprint"):
        facts["fingerprint"] = MetadataValue.text(str(report["dataset_fingerprint"]))
    facts["comparison"] = MetadataValue.json(comparison_summary(report, dataset, path))
    return facts


def comparison_summary(report: dict[str, Any], dataset: AssetKey | None, path: str) -> dict[str, Any]:
    """What the history keeps of a comparison: enough for a list, a leaderboard and a link to the report."""
    metric = report.get("headline")
    models = []
    for m in report.get("models", []):
        entry = {
            "model": m.get("model"),
            "value": m.get(metric) if metric else None,
            "ci": m.get(f"{metric}_ci") if metric else None,
            "rank": m.get("rank"),
            "rank_ci": m.get("rank_ci"),
        }
        if m.get("gate"):
            entry["gate_passed"] = m["gate"].get("passed")
        models.append(entry)
    gate = report.get("gate")
    return {
        "dataset": "/".join(dataset.path) if dataset is not None else None,
        "fingerprint": report.get("dataset_fingerprint"),
        "fingerprint_of": report.get("fingerprint_of"),
        "path": path,
        "task": report.get("task"),
        "kind": report.get("kind"),
        "inputs": report.get("inputs"),
        "labelled": report.get("labelled"),
        "truth": report.get("truth"),
        "metric": metric,
        "higher_is_better": report.get("higher_is_better"),
        "models": models,
        "best": report.get("best"),
        "omnibus": report.get("omnibus"),
        "gate": {"baseline": gate["baseline"], "passed": gate["passed"]} if gate else None,
        "verdict": report.get("verdict"),
    }


#: How many comparison assets, and materializations of each, a report's look back reads at most.
EARLIER_ASSETS = 500
EARLIER_PER_ASSET = 200


def earlier_comparisons(fingerprint: str, limit: int = 20) -> list[dict[str, Any]]:
    """Comparisons made before on the same data (same fingerprint), newest first, from the Dagster instance of
    this process (DAGSTER_HOME); none when there is no instance to ask (a test run in process, say).

    Each: the `comparison` summary with `run_id` and `timestamp` (seconds).
    """
    try:
        instance = DagsterInstance.get()
    except Exception:  # no DAGSTER_HOME, or an instance that cannot open: a report without its history
        return []
    found = []
    with instance:
        for key in instance.get_asset_keys(prefix=["comparisons"], limit=EARLIER_ASSETS):
            for record in instance.fetch_materializations(key, limit=EARLIER_PER_ASSET).records:
                materialization = record.asset_materialization
                if materialization is None:
                    continue
                summary = materialization.metadata.get("comparison")
                value = getattr(summary, "value", None)
                if isinstance(value, dict) and value.get("fingerprint") == fingerprint:
                    found.append({**value, "run_id": record.run_id, "timestamp": record.timestamp})
    found.sort(key=lambda c: -c["timestamp"])
    return found[:limit]
