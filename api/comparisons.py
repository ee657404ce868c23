"""Past comparisons, read from Dagster's asset catalog: the `comparisons/<dataset>` materializations.

Each comparison run materializes `["comparisons", *dataset]` with a JSON `comparison` summary
(orchestrator/assets/lineage.py: dataset, fingerprint, headline metric, each model's value and
interval, verdict, the instruction's path). The gateway reads them over GraphQL, as it reads runs,
and never imports the ops: a list newest first (`history`) and a leaderboard of every model ever
compared on one dataset, best first, with the data's fingerprint said (`leaderboard`).
"""

from __future__ import annotations

import base64
import datetime
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from api.dagster_client import DagsterClient
from api.errors import ApiError

PREFIX = "comparisons"
#: Comparison assets (datasets) read per GraphQL request, and at most in all.
ASSETS_PAGE = 200
MAX_ASSETS = 2000
#: Materializations read per dataset when the list is filtered by fingerprint, or for a leaderboard.
SCAN = 1000
DATASET_PATTERN = r"^[A-Za-z0-9_.\-]{1,100}(/[A-Za-z0-9_.\-]{1,100}){0,15}$"
FINGERPRINT_PATTERN = r"^sha256:[0-9a-f]{64}$"
#: The last millisecond Dagster can read a materialization before (the end of year 9999, UTC): a cursor
#: past it would make Dagster's GraphQL fail (`year 10000 is out of range`).
MAX_TIMESTAMP_MS = 253_402_300_799_999

_ASSETS = """
query ComparisonAssets($cursor: String, $limit: Int) {
  assetsOrError(prefix: ["comparisons"], cursor: $cursor, limit: $limit) {
    __typename
    ... on AssetConnection { nodes { key { path } } cursor }
    ... on PythonError { message }
  }
}"""

_EVENTS = """
  {alias}: assetOrError(assetKey: {{path: {path}}}) {{
    __typename
    ... on Asset {{ assetMaterializations(limit: {limit}{before}) {{
      runId timestamp metadataEntries {{ label ... on JsonMetadataEntry {{ jsonString }} }} }} }}
  }}"""


@dataclass(frozen=True)
class Position:
    """Where a page ends: comparisons are ordered newest first, then by run id and dataset (descending)."""

    timestamp_ms: int
    run_id: str
    dataset: str

    def order(self) -> tuple[int, str, str]:
        return (self.timestamp_ms, self.run_id, self.dataset)

    def encode(self) -> str:
        return _packed([self.timestamp_ms, self.run_id, self.dataset])

    @classmethod
    def decode(cls, cursor: str) -> Position:
        try:
            timestamp, run_id, dataset = _unpacked(cursor)
            if not isinstance(timestamp, int) or not isinstance(run_id, str) or not isinstance(dataset, str):
                raise ValueError
            if not 0 <= timestamp < MAX_TIMESTAMP_MS:  # Dagster is asked for comparisons before timestamp + 1
                raise ValueError
        except (ValueError, TypeError):
            raise ApiError(422, "cursor is not one this API gave (pass next_cursor as it came)") from None
        return cls(timestamp, run_id, dataset)


async def datasets(dagster: DagsterClient) -> list[list[str]]:
    """The asset key path of every dataset compared so far (without the `comparisons` prefix)."""
    found: list[list[str]] = []
    cursor = None
    while len(found) < MAX_ASSETS:
        result = (await dagster.query(_ASSETS, {"cursor": cursor, "limit": ASSETS_PAGE}))["assetsOrError"]
        if result["__typename"] != "AssetConnection":
            raise ApiError(502, f"Dagster could not list the comparisons: {result.get('message')}")
        nodes = result["nodes"]
        found += [node["key"]["path"][1:] for node in nodes if node["key"]["path"][:1] == [PREFIX]]
        cursor = result.get("cursor")
        if len(nodes) < ASSETS_PAGE or not cursor:
            break
    return found


async def events(
    dagster: DagsterClient, keys: list[list[str]], limit: int, before_ms: int | None
) -> dict[str, list[dict[str, Any]]]:
    """Each dataset's comparisons (newest first, at most `limit`, older than `before_ms`), by dataset name."""
    found: dict[str, list[dict[str, Any]]] = {}
    for start in range(0, len(keys), 50):  # one request for 50 datasets, each under an alias
        chunk = keys[start : start + 50]
        before = f', beforeTimestampMillis: "{before_ms}"' if before_ms is not None else ""
        parts = [
            _EVENTS.format(alias=f"d{i}", path=json.dumps([PREFIX, *key]), limit=int(limit), before=before)
            for i, key in enumerate(chunk)
        ]
        data = await dagster.query("query Comparisons {" + "".join(parts) + "\n}", {})
        for i, key in enumerate(chunk):
            answer = data.get(f"d{i}") or {}
            if answer.get("__typename") != "Asset":
                continue
            name = "/".join(key)
            found[name] = [entry for entry in (_entry(name, e) for e in answer["assetMaterializations"]) if entry]
    return found


def _entry(dataset: str, event: dict[str, Any]) -> dict[str, Any] | None:
    """One comparison as the API shows it, from a materialization (None for one made before summaries existed)."""
    summary = next(
        (e.get("jsonString") for e in event.get("metadataEntries") or [] if e.get("label") == "comparison"), None
    )
    try:
        facts = json.loads(summary) if summary else None
    except ValueError:
        facts = None
    if not isinstance(facts, dict):
        return None
    timestamp_ms = int(float(event["timestamp"]))
    run_id = str(event["runId"])
    path = facts.get("path") or ""
    return {
        "run_id": run_id,
        "compared_at": datetime.datetime.fromtimestamp(timestamp_ms / 1000, datetime.UTC).isoformat(),
        "dataset": dataset,
        "fingerprint": facts.get("fingerprint"),
        "fingerprint_of": facts.get("fingerprint_of"),
        "task": facts.get("task"),
        "kind": facts.get("kind"),
        "inputs": facts.get("inputs"),
        "labelled": facts.get("labelled"),
        "truth": facts.get("truth"),
        "metric": facts.get("metric"),
        "higher_is_better": facts.get("higher_is_better"),
        "models": facts.get("models") or [],
        "best": facts.get("best"),
        "omnibus": facts.get("omnibus"),
        "gate": facts.get("gate"),
        "verdict": facts.get("verdict"),
        "path": path,
        "report_url": f"/runs/{quote(run_id)}/report" + (f"?path={quote(path)}" if path else ""),
        "_position": Position(timestamp_ms, run_id, dataset),
    }


async def history(
    dagster: DagsterClient, dataset: str | None, fingerprint: str | None, limit: int, cursor: str | None
) -> dict[str, Any]:
    """Comparisons newest first, of one dataset or of every one, optionally of one fingerprint only."""
    after = Position.decode(cursor) if cursor else None
    keys = [dataset.split("/")] if dataset else await datasets(dagster)
    scan = SCAN if fingerprint else limit + 1
    found = await events(dagster, keys, scan, after.timestamp_ms + 1 if after else None)
    merged = sorted(
        (e for entries in found.values() for e in entries), key=lambda e: e["_position"].order(), reverse=True
    )
    if after is not None:
        merged = [e for e in merged if e["_position"].order() < after.order()]
    # A dataset that gave `scan` comparisons may have older ones: the page is complete only down to its oldest.
    truncated = [entries[-1]["_position"] for entries in found.values() if len(entries) >= scan]
    horizon = max(truncated, key=lambda p: p.order()) if truncated else None
    if horizon is not None:
        merged = [e for e in merged if e["_position"].order() >= horizon.order()]
    chosen = [e for e in merged if fingerprint is None or e["fingerprint"] == fingerprint]
    next_cursor = None
    if len(chosen) > limit:
        next_cursor = chosen[limit - 1]["_position"].encode()
    elif horizon is not None and merged:
        next_cursor = merged[-1]["_position"].encode()
    return {"comparisons": [_public(e) for e in chosen[:limit]], "next_cursor": next_cursor}


def _public(entry: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in entry.items() if not k.startswith("_")}


async def leaderboard(
    dagster: DagsterClient, dataset: str, fingerprint: str | None, limit: int, cursor: str | None
) -> dict[str, Any]:
    """Every model compared on the dataset, best first by the headline metric, on the newest (or given) data first.

    A model compared several times on the same data shows its newest result (`comparisons` counts them).
    Rows made on other data (another fingerprint) follow, flagged `same_data: false`.
    """
    found = (await events(dagster, [dataset.split("/")], SCAN, None)).get(dataset) or []
    if not found:
        raise ApiError(404, f"no comparison of dataset {dataset!r} in the catalog (GET /comparisons lists them)")
    reference = fingerprint or found[0]["fingerprint"]
    versions: dict[str | None, dict[str, Any]] = {}
    rows: dict[tuple[str | None, str], dict[str, Any]] = {}
    for entry in found:  # newest first: the first row of a (fingerprint, model) is its newest
        version = versions.setdefault(
            entry["fingerprint"],
            {"fingerprint": entry["fingerprint"], "comparisons": 0, "last_compared_at": entry["compared_at"]},
        )
        version["comparisons"] += 1
        version["first_compared_at"] = entry["compared_at"]
        for model in entry["models"]:
            key = (entry["fingerprint"], str(model.get("model")))
            if key in rows:
                rows[key]["comparisons"] += 1
                continue
            rows[key] = {
                "model": model.get("model"),
                "metric": entry["metric"],
                "value": model.get("value"),
                "ci": model.get("ci"),
                "higher_is_better": entry["higher_is_better"],
                "fingerprint": entry["fingerprint"],
                "same_data": entry["fingerprint"] == reference,
                "run_id": entry["run_id"],
                "compared_at": entry["compared_at"],
                "task": entry["task"],
                "inputs": entry["inputs"],
                "report_url": entry["report_url"],
                "comparisons": 1,
            }
    if fingerprint is not None and fingerprint not in versions:
        raise ApiError(404, f"no comparison of dataset {dataset!r} has fingerprint {fingerprint}")
    metric = next(e["metric"] for e in found if e["fingerprint"] == reference)
    recency = {fp: i for i, fp in enumerate(versions)}
    ordered = sorted(
        rows.values(),
        key=lambda r: (not r["same_data"], recency[r["fingerprint"]], r["metric"] != metric, _best_first(r)),
    )
    start = _offset(cursor, reference)
    page = ordered[start : start + limit]
    more = start + limit < len(ordered)
    return {
        "dataset": dataset,
        "metric": metric,
        "higher_is_better": next(e["higher_is_better"] for e in found if e["fingerprint"] == reference),
        "fingerprint": reference,
        "data_changed": len(versions) > 1,
        "fingerprints": list(versions.values()),
        "models": page,
        "next_cursor": _encode_offset(start + limit, reference) if more else None,
    }


def _best_first(row: dict[str, Any]) -> tuple[bool, float]:
    value = row["value"]
    if not isinstance(value, int | float):
        return (True, 0.0)  # no value (no truth): last
    return (False, -value if row["higher_is_better"] else value)


def _encode_offset(offset: int, fingerprint: str | None) -> str:
    return _packed([offset, fingerprint])


def _packed(values: list[Any]) -> str:
    """A cursor: the values as compact JSON in unpadded URL-safe base64."""
    return base64.urlsafe_b64encode(json.dumps(values, separators=(",", ":")).encode()).decode().rstrip("=")


def _unpacked(cursor: str) -> Any:
    """A cursor's values; ValueError for any text `_packed` did not make (not base64, not UTF-8, not JSON, or JSON
    nested past the parser's recursion limit)."""
    try:
        return json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except RecursionError:
        raise ValueError("nested too deep") from None


def _offset(cursor: str | None, fingerprint: str | None) -> int:
    if not cursor:
        return 0
    try:
        offset, given = _unpacked(cursor)
        if not isinstance(offset, int) or offset < 0 or given != fingerprint:
            raise ValueError
    except (ValueError, TypeError):  # binascii.Error, UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise ApiError(
            422,
            "cursor is not one this leaderboard gave (pass next_cursor as it came; the data may "
            "have been compared again since)",
        ) from None
    return offset


def check_dataset(dataset: str) -> str:
    if not re.fullmatch(DATASET_PATTERN, dataset):
        raise ApiError(422, "dataset is an asset key path like local/samples (letters, digits, _ . -, by /)")
    return dataset
