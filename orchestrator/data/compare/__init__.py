"""Comparing several models' predictions on the same inputs: the reason this product exists.

`compare(runs, truth)` scores every model against the truth (when there is one) with intervals,
tests whether the best model's lead is significant, measures how far the models agree, and
says so in one line (`verdict`). `markdown`, `charts` and `html_report` present the report;
`find_disagreements` picks the inputs worth looking at.
"""

from __future__ import annotations

from orchestrator.data.compare.inputs import ModelRun, Truth, labels_from_folders
from orchestrator.data.compare.page import html_report
from orchestrator.data.compare.plots import charts
from orchestrator.data.compare.report import compare, find_disagreements
from orchestrator.data.compare.text import markdown

__all__ = [
    "ModelRun",
    "Truth",
    "charts",
    "compare",
    "find_disagreements",
    "html_report",
    "labels_from_folders",
    "markdown",
]
