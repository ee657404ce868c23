"""The report in words: number formats, the tables (shared by Markdown and HTML), and Markdown."""

from __future__ import annotations

import math
from typing import Any

#: Per kind: the headline metric, whether higher is better, and how to name it.
HEADLINE = {
    "classification": ("accuracy", True, "accuracy"),
    "regression": ("rmse", False, "RMSE"),
    "detection": ("map", True, "mAP"),
    "segmentation": ("miou", True, "mIoU"),
}
#: Per kind: the quality columns of the models table (report key, heading).
METRICS = {
    "classification": [("accuracy", "accuracy"), ("macro_f1", "macro-F1")],
    "regression": [("rmse", "RMSE"), ("mae", "MAE"), ("r2", "R²")],
    "detection": [("map", "mAP@[.5:.95]"), ("map_50", "mAP@.5")],
    "segmentation": [("miou", "mIoU"), ("pixel_accuracy", "pixel accuracy")],
}
#: Per kind: what the pair "agreement" measures.
AGREEMENT = {
    "classification": "agreement (same top-1)",
    "regression": "Pearson r",
    "detection": "agreement (matched-box F1)",
    "segmentation": "pixel agreement",
}


def number(value: Any) -> str:
    """0.830; large values with fewer decimals; – when missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    value = float(value)
    return f"{value:.3f}" if abs(value) < 1000 else f"{value:,.1f}"


def with_interval(value: Any, interval: list[float] | None) -> str:
    """`0.830 [0.760, 0.890]`, or just the value when there is no interval."""
    if value is None or not interval:
        return number(value)
    return f"{number(value)} [{number(interval[0])}, {number(interval[1])}]"


def p_value(p: float | None) -> str:
    if p is None:
        return "–"
    if p < 0.001:
        return "< 0.001"
    return f"{p:.3f}" if p < 0.01 else f"{p:.2f}"


def significance_label(report: dict[str, Any]) -> tuple[str, str]:
    """The pair key of the significance test and how to name it."""
    if report["kind"] == "classification":
        return "mcnemar_p", "McNemar p"
    metric = HEADLINE[report["kind"]][2]
    return "p_value", f"p ({metric}, paired bootstrap)"


def models_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The per-model table: quality metrics with their intervals (when labelled), then speed."""
    columns = METRICS[report["kind"]] if report["labelled"] else []
    head = ["model"] + [heading for _, heading in columns] + ["inputs/s", "p50 ms/request", "p95 ms/request"]
    rows = []
    for m in report["models"]:
        quality = [with_interval(m.get(key), m.get(f"{key}_ci")) for key, _ in columns]
        speed = [_speed(m.get("throughput_per_s")), _speed(m.get("latency_p50_ms")), _speed(m.get("latency_p95_ms"))]
        rows.append([m["model"], *quality, *speed])
    return head, rows


def pairs_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The per-pair table: agreement (and kappa, mean difference), and the significance test when labelled."""
    kind = report["kind"]
    head = ["models", AGREEMENT[kind]]
    if kind == "classification":
        head.append("Cohen's kappa")
    if kind == "regression":
        head.append("mean |difference|")
    key, label = significance_label(report)
    adjusted = report["labelled"] and len(report["models"]) >= 3  # many pairs: Holm's adjustment shown beside
    if report["labelled"]:
        head.append(label)
    if adjusted:
        head.append("Holm-adjusted")
    rows = []
    for p in report["pairs"]:
        row = [" vs ".join(p["models"]), number(p.get("agreement"))]
        if kind == "classification":
            row.append(number(p.get("kappa")))
        if kind == "regression":
            row.append(number(p.get("mean_abs_difference")))
        if report["labelled"]:
            row.append(p_value(p.get(key)))
        if adjusted:
            row.append(p_value(p.get(f"{key}_adjusted")))
        rows.append(row)
    return head, rows


#: The per-class metrics of a classifier, in the order its per-class table shows them.
PER_CLASS_METRICS = ("precision", "recall", "f1", "iou")


def per_class_tables(report: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-class results as tables: {"caption", "head", "rows"} each; none without truth.

    Detection and segmentation: one table, a row per class and a column per model (AP, or IoU with its
    interval). Classification: a table per model (support, precision, recall, F1 and IoU with their
    intervals). Segmentation on the Earth has its own (maps.section), so none here.
    """
    if not report["labelled"]:
        return []
    models = report["models"]
    if report["kind"] == "classification":
        tables = []
        for m in models:
            rows = [
                [
                    label,
                    str(values.get("support", "–")),
                    *(with_interval(values.get(k), values.get(f"{k}_ci")) for k in PER_CLASS_METRICS),
                ]
                for label, values in (m.get("per_class") or {}).items()
            ]
            if rows:
                tables.append(
                    {
                        "caption": m["model"],
                        "rows": rows,
                        "head": ["class (truth)", "support", "precision", "recall", "F1", "IoU"],
                    }
                )
        return tables
    if report["kind"] == "detection":
        key, caption = "per_class_ap", "AP@[.5:.95] of each class (the intervals are of mAP only)"
    elif report["kind"] == "segmentation" and not any(m.get("per_class_iou_intervals") for m in models):
        key, caption = "per_class_iou", "IoU of each class, with 95 % bootstrap intervals over images"
    else:
        return []
    shown = [m for m in models if m.get(key)]
    classes = list(dict.fromkeys(name for m in shown for name in m[key]))
    if not classes:
        return []
    rows = [
        [
            name,
            *(
                with_interval(m[key].get(name), (m.get(f"{key}_ci") or {}).get(name)) if name in m[key] else "–"
                for m in shown
            ),
        ]
        for name in classes
    ]
    return [{"caption": caption, "head": ["class", *(m["model"] for m in shown)], "rows": rows}]


def method(report: dict[str, Any]) -> str:
    """One line on where the truth came from and how the intervals were computed."""
    parts = [f"{report['inputs']} inputs"]
    if report["labelled"]:
        parts.insert(0, f"truth: {report['truth']}")
        boot = report.get("bootstrap") or {}
        if boot.get("resamples"):
            parts.append(
                f"intervals: 95 % percentile bootstrap, {boot['resamples']} resamples of the "
                f"{boot['unit']} (seed {boot['seed']})"
            )
    else:
        parts.insert(0, "no ground truth")
    return "; ".join(parts)


def markdown(report: dict[str, Any]) -> str:
    """The report as Markdown (for the Dagster UI): verdict, models table with intervals, pairs table."""
    lines = [f"**Verdict:** {report['verdict']}", "", f"_{_cell(method(report))}_", ""]
    lines += _table(*models_table(report))
    if report["pairs"]:
        lines += [""] + _table(*pairs_table(report))
    return "\n".join(lines)


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(_cell(h) for h in head) + " |", "|" + "---|" * len(head)] + [
        "| " + " | ".join(_cell(c) for c in row) + " |" for row in rows
    ]


def _cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _speed(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"
