"""compare_models on the Earth: truth and regions matched by place, the report with its maps.

The predictions are georeferenced tiles; the truth is a label raster, polygons (GeoJSON,
GeoPackage) or a table with a geometry column (PostGIS). `geotruth.align` puts the truth on every
tile's grid; the comparison itself is the usual one (`compare.compare`) on what it made; the report
then gains what only geography gives (pixels scored, unmatched classes, per-class IoU intervals,
regions) and a map section; the scene GeoTIFFs are the comparison's downloadable files.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from orchestrator.compare import geotruth
from orchestrator.compare.inputs import ModelRun
from orchestrator.datasets import Comparison, Predictions


def compare_on_earth(
    results: Sequence[Predictions],
    runs: Sequence[ModelRun],
    truth: Any,
    regions: Any,
    options: geotruth.Options,
    folder: Path,
    run_dir: Path | None,
    *,
    iou_threshold: float = 0.5,
    baseline: str | None = None,
    gate: dict[str, Any] | None = None,
    run: Mapping[str, Any] | None = None,
    failed: Sequence[dict[str, str]] = (),
    check: Callable[[], None] = lambda: None,
    log: Callable[[str], None] = lambda _: None,
) -> Comparison:
    """The comparison of georeferenced predictions against truth on the Earth: its report, files and page.

    `baseline` and `gate` are the champion gate's (compare/gate.py), on the whole comparison's bootstrap; `run`
    is what the page says of its run (`page.run_facts`), as every comparison's page does; `failed` the models
    left out because they failed to load or run (`failed_models`, said by the verdict and the page)."""
    from orchestrator import compare
    from orchestrator.compare import inputs, maps, reporting

    aligned = geotruth.align(runs, truth, options, folder, regions, check)
    try:
        report = inputs.compare_without(
            failed,
            lambda: compare.compare(
                aligned.runs, aligned.truth, iou_threshold=iou_threshold, baseline=baseline, gate=gate
            ),
        )
        report["failed_models"] = list(failed)
        report = geotruth.extend(
            report,
            aligned,
            lambda part_runs, part_truth: compare.compare(part_runs, part_truth, iou_threshold=iou_threshold),
        )
        scenes, colours, undrawn = maps.draw(results, aligned, folder / "maps", options.caps, check)
        if undrawn:
            report["maps_not_drawn"] = undrawn
        if aligned.kind == "segmentation":  # the truth tiles the page draws beside the models' masks
            aligned.write_truth([row["name"] for row in compare.find_disagreements(aligned.runs, aligned.truth)])
    finally:
        aligned.close()
    files: dict[str, Path] = {}
    for scene in scenes:
        stem = Path(scene.scene).stem
        for model, path in scene.predictions.items():
            files[f"maps/{stem}/{maps._safe(model)}.tif"] = path
        if scene.truth is not None:
            files[f"maps/{stem}/truth.tif"] = scene.truth
        if scene.disagreement is not None:
            files[f"maps/{stem}/disagreement.tif"] = scene.disagreement
    if scenes:
        report["maps"] = [
            {"scene": s.scene, "width": s.width, "height": s.height, "crs": s.crs, "disagreement": s.disagreeing_share}
            for s in scenes
        ]
    links = {str(path): (name, _href(path, run_dir)) for name, path in files.items()}
    charts = compare.charts(report, folder / "charts")
    markdown = compare.markdown(report)
    (folder / "comparison.json").write_text(json.dumps(report, indent=1))
    shown = reporting.disagreements(results, aligned.runs, aligned.truth, colours=colours)  # the maps' colours
    html = folder / "report.html"
    html.write_text(
        compare.html_report(
            report,
            charts,
            shown,
            title=f"Comparison of {len(results)} models",
            geo=maps.section(report, scenes, colours, links),
            run=run,
        )
    )
    log(f"compare_models: {report.get('verdict', '')}")
    return Comparison(report, markdown, charts, html, files=files)


def _href(path: Path, run_dir: Path | None) -> str:
    """The file's address relative to the report page (/runs/<id>/report -> /runs/<id>/files/<path>)."""
    if run_dir is None:
        return path.name
    try:
        relative = path.resolve().relative_to(run_dir.resolve())
    except ValueError:
        return path.name
    return "files/" + quote(relative.as_posix())
