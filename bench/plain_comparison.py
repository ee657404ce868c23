"""The baseline of compare_models for classifiers: a plain script computing what its report computes, with the same
libraries, on the same predictions (bench/comparison.py times it beside compare_models).

`compare(predictions, table, column, key, folder)` reads the truth from the table (JSON Lines), then:
- per model, scikit-learn's accuracy, macro-F1, per-class precision/recall/F1/support, confusion matrix and
  per-class IoU (`jaccard_score`); one-vs-rest ECE from `calibration_curve`, ROC AUC, average precision and the
  macro ROC / precision-recall curves (`roc_curve`, `precision_recall_curve`) from every class's score;
- per pair, agreement, Cohen's kappa and the exact McNemar test (statsmodels); Holm's adjustment
  (`multipletests`); Cochran's Q (statsmodels) over the models; each model's mean rank (SciPy `rankdata`);
- 95 % percentile bootstrap intervals (1,000 resamples of the inputs, the same for every model, as
  `scipy.stats.bootstrap` with a vectorised statistic): accuracy, macro-F1 and per-class precision, recall, F1 and
  IoU from each resample's confusion counts (one `bincount` per model), each model's rank; ROC AUC from the same
  number of resamples (a resample's AUC from its counts per distinct score, ties counted as roc_auc_score does);
- a sha256 of the table file and the truth (what the dataset fingerprint digests);
- the same ten charts with matplotlib (headline metric with intervals, throughput, agreement heat map, the
  critical-difference diagram of scikit-posthocs, reliability, ROC, precision-recall, a confusion matrix per
  model), each saved as PNG with a tight bounding box, and the figures as JSON.

It leaves out what only the product's report does: the disagreeing inputs, the drill-down, Markdown and the HTML
page, the earlier comparisons of the same data.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path
from typing import Any


def compare(
    predictions: list[dict[str, Any]],
    table: Path,
    column: str,
    key: str,
    folder: Path,
    n_resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    import numpy as np
    from scipy import stats as scipy_stats
    from sklearn.calibration import calibration_curve
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        cohen_kappa_score,
        confusion_matrix,
        f1_score,
        jaccard_score,
        precision_recall_curve,
        precision_recall_fscore_support,
        roc_auc_score,
        roc_curve,
    )
    from statsmodels.stats.contingency_tables import cochrans_q, mcnemar
    from statsmodels.stats.multitest import multipletests

    truth: dict[str, str] = {}
    with table.open("rb") as rows:
        for line in rows:
            row = json.loads(line)
            truth[str(row[key])] = str(row[column])
    names = [item["name"] for item in predictions[0]["predictions"]]
    y_true = np.array([truth[n] for n in names])
    classes = sorted(set(y_true) | {label for p in predictions for label in p["labels"]})
    code = {c: i for i, c in enumerate(classes)}
    k, n, m = len(classes), len(names), len(predictions)
    expected = np.array([code[v] for v in y_true])
    predicted = np.array([[code[item["labels"][0]] for item in p["predictions"]] for p in predictions])
    scores = np.array([[[item["scores_all"][c] for c in classes] for item in p["predictions"]] for p in predictions])
    models: list[dict[str, Any]] = []
    present = np.unique(expected)
    for i, p in enumerate(predictions):
        codes = predicted[i]
        labels = np.union1d(expected, codes)
        precision, recall, f1, support = precision_recall_fscore_support(
            expected, codes, labels=labels, zero_division=0
        )
        entry: dict[str, Any] = {
            "model": p["model"],
            "accuracy": accuracy_score(expected, codes),
            "macro_f1": f1_score(expected, codes, average="macro", zero_division=0),
            "per_class": {
                classes[c]: [pr, r, f, s] for c, pr, r, f, s in zip(labels, precision, recall, f1, support, strict=True)
            },
            "iou": jaccard_score(expected, codes, labels=labels, average=None, zero_division=0).tolist(),
            "confusion": confusion_matrix(expected, codes, labels=labels).tolist(),
        }
        eces, tprs, precisions, aucs, aps = [], [], [], [], []
        grid = np.linspace(0, 1, 101)
        for c in present:
            y, s = (expected == c).astype(int), scores[i, :, c]
            observed, mean_score = calibration_curve(y, s, n_bins=10)
            counts = np.bincount(np.searchsorted(np.linspace(0, 1, 11)[1:-1], s), minlength=10)
            eces.append(float(np.sum(counts[counts > 0] / n * np.abs(observed - mean_score))))
            aucs.append(roc_auc_score(y, s))
            aps.append(average_precision_score(y, s))
            fpr, tpr, _ = roc_curve(y, s)
            tprs.append(np.interp(grid, fpr, tpr))
            pr, rc, _ = precision_recall_curve(y, s)
            precisions.append(np.interp(grid, rc[::-1], pr[::-1]))
        entry.update(
            ece=float(np.mean(eces)),
            roc_auc=float(np.mean(aucs)),
            average_precision=float(np.mean(aps)),
            roc=np.mean(tprs, axis=0),
            pr=np.mean(precisions, axis=0),
            reliability=calibration_curve(
                np.concatenate([(expected == c) for c in present]),
                np.concatenate([scores[i, :, c] for c in present]),
                n_bins=10,
            ),
        )
        models.append(entry)
    pairs = []
    for a, b in itertools.combinations(range(m), 2):
        right_a, right_b = predicted[a] == expected, predicted[b] == expected
        both = [
            [np.sum(right_a & right_b), np.sum(right_a & ~right_b)],
            [np.sum(~right_a & right_b), np.sum(~right_a & ~right_b)],
        ]
        pairs.append(
            {
                "models": [a, b],
                "agreement": float(np.mean(predicted[a] == predicted[b])),
                "kappa": cohen_kappa_score(predicted[a], predicted[b]),
                "mcnemar_p": mcnemar(both, exact=True).pvalue,
            }
        )
    adjusted = multipletests([p["mcnemar_p"] for p in pairs], method="holm")[1]
    correct = (predicted == expected).T.astype(int)
    omnibus = cochrans_q(correct)
    mean_ranks = scipy_stats.rankdata(1 - correct, axis=1).mean(axis=0)

    # The bootstrap: 1,000 resamples of the inputs, every model scored on each.
    def confusion_statistic(idx: np.ndarray) -> np.ndarray:
        batch = idx.shape[0]
        rows = []
        offsets = (np.arange(batch) * k * k)[:, None]
        for i in range(m):
            cells = np.bincount((expected[idx] * k + predicted[i][idx] + offsets).ravel(), minlength=batch * k * k)
            matrix = cells.reshape(batch, k, k).astype(float)
            tp, true, said = np.diagonal(matrix, axis1=1, axis2=2), matrix.sum(axis=2), matrix.sum(axis=1)
            with np.errstate(divide="ignore", invalid="ignore"):
                seen = (true + said) > 0
                f1 = np.where(seen, 2 * tp / np.maximum(true + said, 1), 0)
                rows += [
                    tp.sum(axis=1) / idx.shape[1],
                    f1.sum(axis=1) / seen.sum(axis=1),
                    *(tp / said).T,
                    *(tp / true).T,
                    *(2 * tp / (true + said)).T,
                    *(tp / (true + said - tp)).T,
                ]
        return np.array(rows)

    boot = _bootstrap(confusion_statistic, n, n_resamples, seed)
    per_model = 2 + 4 * k
    distribution = boot["distribution"]
    accuracy_resamples = distribution[0::per_model][:m]
    resampled_ranks = scipy_stats.rankdata(-accuracy_resamples, axis=0, method="min")
    for i, entry in enumerate(models):
        base = i * per_model
        entry["accuracy_ci"] = boot["interval"][base].tolist()
        entry["macro_f1_ci"] = boot["interval"][base + 1].tolist()
        entry["per_class_ci"] = [_finite(distribution[row]) for row in range(base + 2, base + per_model)]
        entry["rank_ci"] = np.percentile(resampled_ranks[i], [2.5, 97.5]).tolist()
    # Each input's code: its score's rank among the distinct scores, plus their number if positive: a resample's
    # counts per code give the Mann-Whitney AUC (ties as roc_auc_score counts them).
    problems = []
    for i in range(m):
        for c in present:
            levels, rank = np.unique(scores[i, :, c], return_inverse=True)
            problems.append((levels.size, rank.ravel() + levels.size * (expected == c)))

    def auc_statistic(idx: np.ndarray) -> np.ndarray:
        batch = idx.shape[0]
        found = []
        for size, codes in problems:
            flat = (codes[idx] + (np.arange(batch) * 2 * size)[:, None]).ravel()
            counts = np.bincount(flat, minlength=batch * 2 * size).reshape(batch, 2, size).astype(float)
            neg, pos = counts[:, 0], counts[:, 1]
            below = np.cumsum(neg, axis=1) - neg
            with np.errstate(divide="ignore", invalid="ignore"):
                found.append((pos * (below + neg / 2)).sum(axis=1) / (pos.sum(axis=1) * neg.sum(axis=1)))
        return np.nanmean(np.array(found).reshape(m, len(present), batch), axis=1)

    auc_boot = _bootstrap(auc_statistic, n, n_resamples, seed)
    for i, entry in enumerate(models):
        entry["roc_auc_ci"] = auc_boot["interval"][i].tolist()
    digest = hashlib.sha256(table.read_bytes())
    digest.update(json.dumps([[name, truth[name]] for name in sorted(names)]).encode())
    report = {
        "models": models,
        "pairs": pairs,
        "holm": adjusted.tolist(),
        "cochran_q": [omnibus.statistic, omnibus.pvalue],
        "mean_ranks": mean_ranks.tolist(),
        "fingerprint": digest.hexdigest(),
    }
    _charts(report, predictions, classes, folder)
    (folder / "figures.json").write_text(json.dumps(report, default=lambda v: np.asarray(v).tolist()))
    return report


def _bootstrap(statistic: Any, n: int, n_resamples: int, seed: int) -> dict[str, Any]:
    import numpy as np
    from scipy import stats as scipy_stats

    def vectorised(idx: np.ndarray, axis: int = -1) -> np.ndarray:
        idx = np.moveaxis(np.asarray(idx), axis, -1)
        flat = idx.reshape(-1, idx.shape[-1])
        values = statistic(flat)
        return values.reshape(values.shape[:1] + idx.shape[:-1])

    with np.errstate(divide="ignore", invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # resamples where a class is absent: NaN rows
            result = scipy_stats.bootstrap(
                (np.arange(n),),
                vectorised,
                n_resamples=n_resamples,
                batch=max(1, 2_000_000 // n),
                vectorized=True,
                method="percentile",
                rng=np.random.default_rng(seed),
            )
    interval = np.stack([result.confidence_interval.low, result.confidence_interval.high], axis=1)
    return {"interval": interval, "distribution": result.bootstrap_distribution}


def _finite(values: Any) -> list[float] | None:
    import numpy as np

    values = values[np.isfinite(values)]
    return np.percentile(values, [2.5, 97.5]).tolist() if values.size > 1 else None


def _charts(report: dict[str, Any], predictions: list[dict[str, Any]], classes: list[str], folder: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import numpy as np
    import pandas as pd
    import scikit_posthocs
    from matplotlib.figure import Figure

    folder.mkdir(parents=True, exist_ok=True)
    models, names = report["models"], [p["model"] for p in predictions]

    def save(figure: Any, name: str) -> None:
        figure.savefig(folder / name, format="png", dpi=110, bbox_inches="tight", pad_inches=0.2)

    def bars(values: list[float], errors: Any, title: str, name: str) -> None:
        figure = Figure(figsize=(8, 1.4 + 0.55 * len(values)))
        axes = figure.add_subplot()
        axes.barh(np.arange(len(values)), values, xerr=errors, capsize=4, height=0.6)
        axes.set_yticks(np.arange(len(values)), names)
        axes.invert_yaxis()
        axes.set_title(title)
        axes.grid(axis="x", alpha=0.3)
        for y, value in enumerate(values):
            axes.annotate(f"{value:.3f}", (value, y), xytext=(4, 0), textcoords="offset points", va="center")
        save(figure, name)

    accuracy = [e["accuracy"] for e in models]
    errors = np.array(
        [[a - e["accuracy_ci"][0], e["accuracy_ci"][1] - a] for a, e in zip(accuracy, models, strict=True)]
    ).T
    bars(accuracy, errors, "accuracy per model, with 95 % bootstrap intervals", "metric.png")
    bars([p["stats"]["inputs"] / p["stats"]["seconds"] for p in predictions], None, "Throughput per model", "speed.png")

    def heatmap(matrix: Any, labels: list[str], title: str, name: str) -> None:
        figure = Figure(figsize=(3 + 0.45 * len(labels) + 1.5, 3 + 0.45 * len(labels)))
        axes = figure.add_subplot()
        image = axes.imshow(matrix, cmap="Blues", aspect="auto")
        figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04)
        axes.set_xticks(np.arange(len(labels)), labels, rotation=45, ha="right")
        axes.set_yticks(np.arange(len(labels)), labels)
        axes.set_title(title)
        for (r, c), value in np.ndenumerate(matrix):
            axes.text(c, r, f"{value:.2f}" if value < 1.5 else f"{value:.0f}", ha="center", va="center", fontsize=8)
        save(figure, name)

    agreement = np.eye(len(names))
    for pair in report["pairs"]:
        a, b = pair["models"]
        agreement[a, b] = agreement[b, a] = pair["agreement"]
    heatmap(agreement, names, "agreement between models", "agreement.png")
    matrix = pd.DataFrame(np.ones((len(names), len(names))), index=names, columns=names)
    for pair, p in zip(report["pairs"], report["holm"], strict=True):
        a, b = pair["models"]
        matrix.iloc[a, b] = matrix.iloc[b, a] = p
    figure = Figure(figsize=(9, 1.6 + 0.45 * len(names)))
    axes = figure.add_subplot()
    scikit_posthocs.critical_difference_diagram(dict(zip(names, report["mean_ranks"], strict=True)), matrix, ax=axes)
    axes.set_title("Mean rank over the inputs (1 = best)")
    save(figure, "critical-difference.png")
    grid = np.linspace(0, 1, 101)
    for name, title in (("reliability", "Reliability diagram"), ("roc", "ROC"), ("pr", "Precision-recall")):
        figure = Figure(figsize=(6.5, 5.2))
        axes = figure.add_subplot()
        for model, entry in zip(names, models, strict=True):
            if name == "reliability":
                observed, mean_score = entry["reliability"]
                axes.plot(mean_score, observed, marker="o", label=f"{model} (ECE {entry['ece']:.3f})")
            elif name == "roc":
                axes.plot(grid, entry["roc"], label=f"{model} (AUC {entry['roc_auc']:.3f})")
            else:
                axes.plot(grid, entry["pr"], label=f"{model} (AP {entry['average_precision']:.3f})")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend(loc="best", fontsize=8, frameon=False)
        save(figure, f"{name}.png")
    for i, entry in enumerate(models, start=1):
        heatmap(
            np.array(entry["confusion"]), classes, f"{entry['model']}\nconfusion matrix (counts)", f"confusion-{i}.png"
        )
