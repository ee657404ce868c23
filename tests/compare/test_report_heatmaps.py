"""The report's heat maps read well (issue 22): a colour bar of counts has whole-number ticks, and every
cell's number contrasts with its cell (WCAG 2.1 ratio of at least 4.5:1, the AA level for text)."""

from __future__ import annotations

import numpy as np
import pytest
from coloraide import Color
from matplotlib.colors import to_rgb

from orchestrator.compare import plots


def drawn(figure):
    figure.canvas.draw()  # tick labels and colours are settled when the figure is drawn
    heat, bar = figure.axes
    return heat, bar


def contrast(foreground, background) -> float:
    return Color("srgb", list(to_rgb(foreground))).contrast(Color("srgb", list(background[:3])), method="wcag21")


def cell_contrasts(heat) -> list[float]:
    """For each number written on the map: the contrast of its colour with its cell's colour."""
    [image] = heat.get_images()
    matrix = np.asarray(image.get_array())
    found = []
    for label in heat.texts:
        column, row = (int(round(v)) for v in label.get_position())
        cell = image.cmap(image.norm(matrix[row, column]))
        found.append(contrast(label.get_color(), cell))
    return found


@pytest.mark.parametrize("matrix", [[[3, 1], [0, 2]], [[1, 0, 2], [3, 0, 0], [0, 1, 1]], [[40, 3], [1, 37]]])
def test_a_confusion_colour_bar_counts_in_whole_numbers(matrix):
    heat, bar = drawn(
        plots._confusion({"model": "m", "confusion": {"labels": list("abc")[: len(matrix)], "matrix": matrix}})
    )
    low, high = bar.get_ylim()
    shown = [
        (value, label.get_text())
        for value, label in zip(bar.get_yticks(), bar.get_yticklabels(), strict=True)
        if low <= value <= high
    ]
    assert len(shown) >= 2, shown
    assert all(float(value).is_integer() and text.lstrip("−-").isdigit() for value, text in shown), shown


@pytest.mark.parametrize(
    "values",
    [
        [[3, 1], [0, 2]],  # few counts: every level of blue
        [[12, 0, 0, 1], [2, 9, 1, 0], [0, 3, 7, 2], [1, 0, 5, 6]],
        np.arange(36).reshape(6, 6).tolist(),  # every shade from white to navy
    ],
)
def test_every_confusion_cell_can_be_read(values):
    heat, _ = drawn(
        plots._confusion(
            {"model": "m", "confusion": {"labels": [f"c{i}" for i in range(len(values))], "matrix": values}}
        )
    )
    found = cell_contrasts(heat)
    assert len(found) == np.size(values) and min(found) >= 4.5, found


def test_every_agreement_cell_can_be_read():
    # The agreements of three close models sit high in the 0-1 scale: navy cells, all above the data's
    # midpoint (0.965) but 0.93, which the midpoint rule wrote in black on navy.
    report = {
        "kind": "classification",
        "models": [{"model": m} for m in ("a", "b", "c")],
        "pairs": [
            {"models": ["a", "b"], "agreement": 0.93},
            {"models": ["a", "c"], "agreement": 0.97},
            {"models": ["b", "c"], "agreement": 0.95},
        ],
    }
    heat, _ = drawn(plots._agreement(report))
    found = cell_contrasts(heat)
    assert len(found) == 9 and min(found) >= 4.5, found


def test_black_or_white_whichever_reads_better():
    assert plots.readable_on((1.0, 1.0, 1.0)) == "black" and plots.readable_on((0.03, 0.19, 0.42)) == "white"
    for grey in np.linspace(0, 1, 101):  # the better of the two always reaches 4.5:1
        cell = (grey, grey, grey)
        assert contrast(plots.readable_on(cell), cell) >= 4.5
