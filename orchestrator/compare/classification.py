"""Classification (image, zero-shot, text, tabular): top-1 labels against the truth's classes.

Metrics come from scikit-learn (accuracy, macro-F1, per-class precision/recall/F1, confusion
matrix, Cohen's kappa); the exact McNemar test from SciPy. Labels match without regard to case
(a folder "fire" is the class "Fire"); a class is shown as a model spelt it, else as the truth did.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from orchestrator.compare import perclass, stats
from orchestrator.compare.inputs import ModelRun, Truth, items_by_name
from orchestrator.engine import OperationError


def top1(run: ModelRun, item: dict[str, Any]) -> tuple[str, float | None]:
    """A prediction's best label and its score (labels are best first); "" when it has none."""
    labels = item.get("labels")
    if not isinstance(labels, list):
        raise OperationError(
            f"model {run.model!r}: the prediction for {item.get('name')!r} has no 'labels' list; "
            "classification predictions are {'name', 'labels': [best first], 'scores': [...]}"
        )
    scores = item.get("scores") or []
    return (str(labels[0]) if labels else ""), (float(scores[0]) if scores else None)


def as_class(value: Any) -> str:
    """A truth value as a class name: 1.0 from a numeric table column is the class "1"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Encoded:
    """Every run's top-1 (and the truth) as integer class codes over one shared, case-folded vocabulary."""

    #: The last one made: scoring, the disagreements and the drill-down of one comparison encode the same
    #: predictions (a Python pass over every prediction); `of` hands it back for the same objects.
    _last: Encoded | None = None

    @classmethod
    def of(cls, runs: Sequence[ModelRun], names: Sequence[str], truth: Truth | None) -> Encoded:
        """The encoding of these runs' predictions and truth: the last one made when it is of the very same
        prediction lists, names and truth (compared by identity: scoring encodes anew, and what follows it in
        the same comparison, disagreements and drill-down, finds it here)."""
        last = cls._last
        if (
            last is not None
            and last.truth_of is truth
            and len(last.runs) == len(runs)
            and all(a.items is b.items and a.labels == b.labels for a, b in zip(last.runs, runs, strict=True))
            and last.names == list(names)
        ):
            return last
        return cls.anew(runs, names, truth)

    @classmethod
    def anew(cls, runs: Sequence[ModelRun], names: Sequence[str], truth: Truth | None) -> Encoded:
        """A new encoding, kept as the last one made."""
        cls._last = found = cls(runs, names, truth)
        return found

    def __init__(self, runs: Sequence[ModelRun], names: Sequence[str], truth: Truth | None):
        self.runs = list(runs)
        self.names = list(names)
        self.truth_of = truth
        shown: dict[str, str] = {}
        self.top1: list[list[str]] = []
        self.scores: list[list[float | None]] = []
        for run in runs:
            by_name = items_by_name(run)
            pairs = [top1(run, by_name[name]) for name in names]
            self.top1.append([label for label, _ in pairs])
            self.scores.append([score for _, score in pairs])
        self.truth: list[str] | None = [as_class(truth.values[n]) for n in names] if truth is not None else None
        for label in itertools.chain(*(run.labels for run in runs), *self.top1, self.truth or []):
            shown.setdefault(label.casefold(), label)
        keys = sorted(shown)
        code = {key: i for i, key in enumerate(keys)}
        self.display = [shown[key] for key in keys]
        self.k = len(keys)
        self.predicted = np.array([[code[v.casefold()] for v in labels] for labels in self.top1], dtype=np.int64)
        self.expected = None if self.truth is None else np.array([code[v.casefold()] for v in self.truth], np.int64)


def resampled_scores(
    expected: np.ndarray, predicted: np.ndarray, k: int, idx: np.ndarray, per_class: bool = False
) -> np.ndarray:
    """Accuracy and macro-F1 of every model on each resample: rows [acc_1..acc_M, f1_1..f1_M], (2M, batch).

    `idx` (batch, n) indexes the inputs; each resample is counted into the cells of the contingency table
    (truth × every model's answer) and scored by `Contingency.scores`.
    """
    table = Contingency(expected, predicted, k)
    batch = idx.shape[0]
    offsets = (np.arange(batch) * table.size)[:, None]
    counts = np.bincount((table.codes[idx] + offsets).ravel(), minlength=batch * table.size)
    return table.scores(counts.reshape(batch, table.size), per_class)


class Contingency:
    """The inputs as cells of (truth, each model's answer): every classification metric here is a function of how
    many inputs each cell holds, so a bootstrap resample is a vector of cell counts (stats.bootstrap_counts)."""

    def __init__(self, expected: np.ndarray, predicted: np.ndarray, k: int):
        from scipy.sparse import csr_array

        cells, self.codes = stats.cells_of(np.vstack([expected[None, :], predicted]))
        self.size, self.k = cells.shape[1], k
        rows = np.arange(self.size)

        def indicator(classes: np.ndarray, keep: np.ndarray | None = None) -> Any:  # cells × classes, sparse
            ones = np.ones(self.size) if keep is None else keep.astype(float)
            return csr_array((ones, (rows, classes)), shape=(self.size, k))

        self.true = indicator(cells[0])  # the cell's true class
        self.hits = [indicator(cells[0], cells[0] == answers) for answers in cells[1:]]  # right, by true class
        self.guesses = [indicator(answers) for answers in cells[1:]]  # the class the model said

    def scores(self, counts: np.ndarray, per_class: bool = False) -> np.ndarray:
        """Accuracy and macro-F1 of every model from cell counts (batch, cells): rows [acc_1..acc_M, f1_1..f1_M].

        Per class: tp, true and predicted counts; F1 = 2·tp / (true + predicted), averaged over the classes
        present in the truth or the predictions of that resample (as `f1_score(average="macro")` does). With
        `per_class`, the rows of `perclass.rows` follow (per-class precision, recall, F1 and IoU from the
        same counts).
        """
        counts = np.asarray(counts, dtype=float)
        n = counts.sum(axis=1)
        true = counts @ self.true
        accuracy, macro_f1, hits, guesses = [], [], [], []
        for right, said in zip(self.hits, self.guesses, strict=True):
            tp, guessed = counts @ right, counts @ said
            support = true + guessed
            present = support > 0
            f1 = np.where(present, 2 * tp / np.maximum(support, 1), 0.0)
            macro_f1.append(f1.sum(axis=1) / present.sum(axis=1))
            accuracy.append(tp.sum(axis=1) / n)
            hits.append(tp)
            guesses.append(guessed)
        if not per_class:
            return np.array(accuracy + macro_f1)
        return np.concatenate([np.array(accuracy + macro_f1), perclass.rows(true, hits, guesses)])


def evaluate(
    runs: Sequence[ModelRun], names: Sequence[str], truth: Truth | None, *, seed: int, n_resamples: int, **_: Any
) -> stats.Evaluation:
    enc = Encoded.anew(runs, names, truth)
    models: list[dict[str, Any]] = [{} for _ in runs]
    resamples = None
    if enc.expected is not None:
        expected = enc.expected
        detailed = enc.k <= perclass.MAX_CLASSES  # per-class intervals from the same resamples
        table = Contingency(expected, enc.predicted, enc.k)
        with np.errstate(divide="ignore", invalid="ignore"):  # a class a resample lacks: its rows are NaN
            boot = stats.bootstrap_counts(
                lambda counts: table.scores(counts, detailed),
                table.codes,
                table.size,
                n_resamples=n_resamples,
                seed=seed,
            )
        resamples = None if boot is None else n_resamples
        m = len(runs)
        for i, codes in enumerate(enc.predicted):
            present = np.union1d(expected, codes)
            precision, recall, f1, support = precision_recall_fscore_support(
                expected, codes, labels=present, zero_division=0
            )
            models[i] = {
                "accuracy": float(accuracy_score(expected, codes)),
                "accuracy_ci": boot.interval(i) if boot else None,
                "macro_f1": float(f1_score(expected, codes, average="macro", zero_division=0)),
                "macro_f1_ci": boot.interval(m + i) if boot else None,
                "per_class": {
                    enc.display[c]: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                    for c, p, r, f, s in zip(present, precision, recall, f1, support, strict=True)
                },
                "confusion": {
                    "labels": [enc.display[c] for c in present],
                    "matrix": confusion_matrix(expected, codes, labels=present).tolist(),
                },
            }
        perclass.add(
            models,
            expected,
            enc.predicted,
            enc.k,
            enc.display,
            boot.distribution[2 * m :] if boot is not None and detailed else None,
        )
    pairs = []
    for a, b in itertools.combinations(range(len(runs)), 2):
        first, second = enc.predicted[a], enc.predicted[b]
        kappa = float(cohen_kappa_score(first, second, labels=np.union1d(first, second), replace_undefined_by=np.nan))
        pair: dict[str, Any] = {
            "models": [runs[a].model, runs[b].model],
            "agreement": float(accuracy_score(first, second)),
            "kappa": kappa,
            "cohen_kappa": kappa,
        }
        if enc.expected is not None:
            p, only_first, only_second = stats.mcnemar(first == enc.expected, second == enc.expected)
            pair.update(mcnemar_p=p, only_first_correct=only_first, only_second_correct=only_second)
        pairs.append(pair)
    if enc.expected is None:
        return stats.Evaluation(models, pairs, resamples)
    m = len(runs)
    distributions = {"accuracy": boot.distribution[:m], "macro_f1": boot.distribution[m : 2 * m]} if boot else {}
    return stats.Evaluation(
        models, pairs, resamples, distributions=distributions, correct=enc.predicted == enc.expected
    )


def disagreements(runs: Sequence[ModelRun], names: Sequence[str], truth: Truth | None, **_: Any) -> list[dict]:
    """Inputs whose top-1 differs between models, scored by how many different answers they got."""
    enc = Encoded.of(runs, names, truth)
    rows = []
    for j, name in enumerate(names):
        answers = {int(codes[j]) for codes in enc.predicted}
        if len(answers) < 2:
            continue
        shown = {}
        for i, run in enumerate(runs):
            score = enc.scores[i][j]
            shown[run.model] = enc.top1[i][j] + (f" ({score:.2f})" if score is not None else "")
        row: dict[str, Any] = {"name": name, "predictions": shown, "truth": enc.truth[j] if enc.truth else None}
        confidence = np.mean([s for s in (enc.scores[i][j] for i in range(len(runs))) if s is not None] or [0.0])
        row["disagreement"] = len(answers) - 1 + float(confidence) / 2
        if enc.expected is not None:
            row["correct"] = {run.model: bool(enc.predicted[i][j] == enc.expected[j]) for i, run in enumerate(runs)}
        rows.append(row)
    return rows
