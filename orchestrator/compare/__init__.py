"""Comparing several models' predictions on the same inputs: the reason this product exists.

`compare(runs, truth)` scores every model against the truth (when there is one) with intervals,
tests whether the best model's lead is significant, measures how far the models agree, and
says so in one line (`verdict`). `markdown`, `charts` and `html_report` present the report;
`find_disagreements` picks the inputs worth looking at.

The names load on first use (PEP 562): scikit-learn, SciPy and matplotlib take seconds to
import, and a run that compares nothing should not pay for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from orchestrator.compare.inputs import ModelRun, Truth, labels_from_folders
    from orchestrator.compare.page import html_report
    from orchestrator.compare.plots import charts
    from orchestrator.compare.report import compare, find_disagreements
    from orchestrator.compare.text import markdown

_WHERE = {
    "ModelRun": "inputs",
    "Truth": "inputs",
    "labels_from_folders": "inputs",
    "html_report": "page",
    "charts": "plots",
    "compare": "report",
    "find_disagreements": "report",
    "markdown": "text",
}

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


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
    globals()[name] = value
    return value
