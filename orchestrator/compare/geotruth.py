"""Ground truth matched to predictions by geography: label rasters, polygons, PostGIS tables; regions.

`align` reads the truth for every predicted tile's footprint onto the tile's own grid (geo.py), and
hands the comparison what it already knows how to score:

- segmentation: a truth tile per tile (uint16 class codes on the tile's grid, 65535 where a pixel
  is not scored: outside every labelled feature, nodata in the label raster, or nodata in any
  model's prediction, i.e. in the input) — a `Truth` of kind "masks" named by class. The tiles
  are held in memory with the masks (`TileArrays`) for the maps; as files (16-bit PNGs) they are
  written only for the tiles a page draws (`Aligned.write_truth`), the scoring having its counts;
- classification of tiles: each tile's class, the one covering its centre (`rule` "centre") or
  most of its labelled pixels ("majority"); tiles without one are not scored.

While reading, it counts scored and ignored pixels, and each tile's confusion counts per model
(one `np.bincount` of truth × classes + prediction, over class names shared by truth and models;
scikit-learn's `confusion_matrix` is what the tests check it against), with what else the scoring
needs from the masks (pair agreement, each mask's largest classes): the truth it hands on carries
them (`Truth.counted`), so the comparison scores the tiles without reading the masks again.
Regions (polygons with a name) split the same truth: the comparison is run again on each region's
pixels (segmentation: counted in the same pass, per region) or on the tiles whose centre lies in it
(classification).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.compare import geo
from orchestrator.compare.inputs import ModelRun, Truth
from orchestrator.datasets import FileRef, Table
from orchestrator.engine import OperationError
from orchestrator.transforms import threads

IGNORE = 65535  # truth tiles: uint16 class codes, this where a pixel is not scored
# The masks and truth tiles an alignment holds in memory for the maps; past this, in files of a temporary folder.
HELD_BYTES = 1024**3
READERS, AHEAD = 2, 8  # threads reading tiles ahead of the counting, and how many tiles they may read ahead
RULES = ("centre", "majority")
# Keys of a model's entry that describe the whole run, not a region's pixels.
SPEED_KEYS = (
    "task",
    "inputs",
    "seconds",
    "throughput_per_s",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_ms_per_input",
)


@dataclass
class Options:
    column: str = "label"  # vector truth: the property / column holding each feature's class
    classes: list[str] | None = None  # label raster: class names by id
    rule: str = "centre"  # classification of tiles: centre | majority
    region_column: str = "name"
    caps: int | None = None  # a raster's most width × height × bands


def is_geographic(truth: Any, items: Sequence[dict[str, Any]]) -> bool:
    """Whether truth should be matched by place: georeferenced predictions, and polygons or a georeferenced raster."""
    if truth is None or geo.grids_of(items[:1]) is None:
        return False
    if isinstance(truth, Table):
        return bool(getattr(truth, "geometry", None))
    refs = truth.refs() if hasattr(truth, "refs") and callable(truth.refs) else list(truth)
    return any(geo.is_vector(r) for r in refs) or bool(geo.label_rasters(refs))


# --- truth as class codes on any grid ----------------------------------------------------------------------------


class Names:
    """Class names in the order first met, matched without regard to case; each a code 0, 1, 2…"""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.codes: dict[str, int] = {}

    def code(self, name: str) -> int:
        key = name.casefold()
        if key not in self.codes:
            self.codes[key] = len(self.names)
            self.names.append(name)
        return self.codes[key]


class Polygons:
    """Truth from polygons: each feature's class by name."""

    def __init__(self, layer: geo.Layer):
        self.layer, self.names = layer, Names()
        self.codes = np.array([self.names.code(v) for v in layer.values], dtype=np.int32)
        self.source = layer.source

    def labels(self, grid: geo.Grid) -> np.ndarray:
        return self.layer.burn(grid, self.codes)

    def bounds(self, crs: Any) -> tuple[float, float, float, float]:
        return self.layer.bounds(crs)

    def close(self) -> None:
        pass


class Raster:
    """Truth from label rasters: each id's class named by `classes`, the raster's CLASSES tag, or the id itself."""

    def __init__(self, refs: Sequence[FileRef], classes: Sequence[str] | None, caps: int | None):
        self.raster, self.names = geo.LabelRaster(refs, classes, caps), Names()
        self.table = np.full(0, -1, dtype=np.int32)  # raster id -> class code
        self.source = self.raster.source

    def labels(self, grid: geo.Grid) -> np.ndarray:
        return self.codes(self.raster.read(grid))

    def codes(self, ids: np.ndarray) -> np.ndarray:
        """The truth's class codes of the raster's ids (read in any thread; named here, in one)."""
        labelled = ids >= 0
        if not labelled.any():
            return ids
        top = int(ids.max())
        if top >= self.table.size:
            self.table = np.concatenate([self.table, np.full(top + 1 - self.table.size, -1, dtype=np.int32)])
        for class_id in np.flatnonzero(np.bincount(ids[labelled], minlength=top + 1)):
            if self.table[class_id] < 0:
                self.table[class_id] = self.names.code(self.raster.name(int(class_id)))
        return np.where(labelled, self.table[np.maximum(ids, 0)], geo.UNLABELLED)

    def bounds(self, crs: Any) -> tuple[float, float, float, float]:
        return self.raster.bounds(crs)

    def close(self) -> None:
        self.raster.__exit__()


def source_of(truth: Any, options: Options, what: str = "the truth") -> Polygons | Raster:
    if isinstance(truth, Table):
        return Polygons(geo.layer_of(truth, options.column, what))
    refs = truth.refs() if hasattr(truth, "refs") and callable(truth.refs) else list(truth)
    if any(geo.is_vector(r) for r in refs):
        return Polygons(geo.layer_of(refs, options.column, what))
    rasters = geo.label_rasters(refs)
    if not rasters:
        raise OperationError(f"{what} holds neither polygons (GeoJSON, GeoPackage) nor a georeferenced label raster")
    return Raster(rasters, options.classes, options.caps)


def regions_of(regions: Any, options: Options) -> geo.Layer:
    if isinstance(regions, Table):
        return geo.layer_of(regions, options.region_column, "regions")
    refs = regions.refs() if hasattr(regions, "refs") and callable(regions.refs) else list(regions)
    return geo.layer_of(refs, options.region_column, "regions")


# --- alignment ---------------------------------------------------------------------------------------------------


@dataclass
class Subset:
    """One region's share of the comparison."""

    name: str
    runs: list[ModelRun]
    truth: Truth
    scored_pixels: int | None


@dataclass
class Aligned:
    kind: str  # segmentation | classification
    runs: list[ModelRun]  # the scored tiles' predictions
    truth: Truth
    source: str
    names: list[str]  # truth classes by code
    present: list[str]  # truth classes that label something scored
    scored_pixels: int | None = None
    ignored_pixels: int | None = None
    ignored_inputs: list[str] = field(default_factory=list)
    grids: dict[str, geo.Grid] = field(default_factory=dict)  # every tile's, in the predictions' order
    regions: list[Subset] = field(default_factory=list)
    counts: np.ndarray | None = None  # tiles × models × classes × classes (truth rows, predicted columns)
    vocabulary: list[str] = field(default_factory=list)
    held: TileArrays | None = None  # segmentation: every tile's masks and truth codes (for the maps)

    def write_truth(self, names: Sequence[str]) -> None:
        """Write the truth tiles of `names` (16-bit PNGs of class codes, IGNORE where not scored) where the truth
        says they are: the scoring counted them in the pass, so only the tiles a page draws are written."""
        if self.held is None:
            return
        for name in names:
            path = self.truth.values.get(name)
            if path is not None and name in self.held and not Path(path).exists():
                _write_png(Path(path), np.asarray(self.held.get(name)[-1]))

    def close(self) -> None:
        if self.held is not None:
            self.held.close()


def align(
    runs: Sequence[ModelRun],
    truth: Any,
    options: Options,
    out_dir: Path,
    regions: Any = None,
    check: Callable[[], None] = lambda: None,
) -> Aligned:
    """Read the truth (and the regions) onto every predicted tile; what the comparison then scores."""
    if options.rule not in RULES:
        raise OperationError(f"truth_rule {options.rule!r}: give one of {', '.join(RULES)}")
    items = runs[0].items
    grids = geo.grids_of(items)
    if grids is None:
        raise OperationError(
            f"the predictions of {runs[0].model!r} are not georeferenced (no crs and transform): "
            "geographic truth and regions need tiles of a GeoTIFF"
        )
    source = source_of(truth, options)
    try:
        _check_overlap(source.bounds, source.source, grids)
        region_layer = regions_of(regions, options) if regions is not None else None
        if region_layer is not None:
            _check_overlap(region_layer.bounds, region_layer.source, grids)
        kind = "segmentation" if runs[0].task == "image-segmentation" else "classification"
        if kind == "segmentation":
            aligned = _segmentation(runs, grids, source, out_dir, region_layer, check)
        else:
            aligned = _classification(runs, grids, source, options.rule, region_layer, check)
    finally:
        source.close()
    _check_classes(aligned, runs)
    return aligned


def _check_overlap(bounds_in: Callable[[Any], tuple[float, ...]], what: str, grids: Sequence[geo.Grid]) -> None:
    crs, scene = geo.extent(grids)
    found = bounds_in(crs)
    if not geo.overlaps(found, scene):
        raise OperationError(
            f"{what} does not overlap the predicted tiles: it covers {geo.shown_bounds(found, crs)}, "
            f"the tiles cover {geo.shown_bounds(scene, crs)}"
        )


def _read_mask(path: Any) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(Path(str(path))) as image:
            return np.asarray(image)
    except (OSError, ValueError) as exc:
        raise OperationError(f"cannot read the predicted mask {Path(str(path)).name!r}: {exc}") from None


class _Vocabulary:
    """Class names shared by the truth and the models (case-folded), for confusion counts."""

    def __init__(self, truth: Names, runs: Sequence[ModelRun]):
        self.names = Names()
        for name in itertools.chain(truth.names, *(run.labels for run in runs)):
            self.names.code(name)
        self.tables = [np.array([self.names.code(n) for n in run.labels], dtype=np.int32) for run in runs]

    def truth_codes(self, truth: Names, codes: np.ndarray) -> np.ndarray:
        table = np.array([self.names.code(n) for n in truth.names] or [0], dtype=np.int32)
        return table[codes]

    def model_codes(self, index: int, ids: np.ndarray) -> np.ndarray:
        table = self.tables[index]
        top = int(ids.max(initial=0))
        if top >= table.size:  # room for ids the model's labels do not name (-1 until met)
            table = self.tables[index] = np.concatenate([table, np.full(top + 1 - table.size, -1, dtype=np.int32)])
        codes = table[ids]
        if codes.size and int(codes.min()) < 0:  # ids met for the first time: classes "#id" (nodata's "#255" too)
            for class_id in np.unique(ids[codes < 0]).tolist():
                table[class_id] = self.names.code(f"#{class_id}")
            codes = table[ids]
        return codes


def confusion(truth: np.ndarray, predicted: np.ndarray, size: int) -> np.ndarray:
    """size × size counts of (truth row, predicted column) pairs of codes in 0..size-1: scikit-learn's
    `confusion_matrix(truth, predicted, labels=range(size))` without its per-call validation."""
    return np.bincount(truth * size + predicted, minlength=size * size).reshape(size, size)


class TileArrays:
    """Each tile's masks (one per model) and truth codes as the alignment read them, for the maps and the page's
    drawings, so that nothing reads the masks again: in memory up to `budget` bytes, beyond that in .npy files
    of a temporary folder (memory then follows the budget, not the scene)."""

    def __init__(self, budget: int | None = None):
        self.budget, self.held = HELD_BYTES if budget is None else budget, 0
        self._memory: dict[str, list[np.ndarray]] = {}
        self._spilt: dict[str, list[Path]] = {}
        self._folder: Any = None

    def put(self, name: str, arrays: list[np.ndarray]) -> None:
        size = sum(a.nbytes for a in arrays)
        if self.held + size <= self.budget:
            self._memory[name] = arrays
            self.held += size
            return
        import tempfile

        if self._folder is None:
            self._folder = tempfile.TemporaryDirectory(prefix="constellation-tiles-")
        paths = [Path(self._folder.name) / f"{len(self._spilt):06d}-{k}.npy" for k in range(len(arrays))]
        for path, array in zip(paths, arrays, strict=True):
            np.save(path, array)
        self._spilt[name] = paths

    def get(self, name: str) -> list[np.ndarray]:
        if name in self._memory:
            return self._memory[name]
        return [np.load(path, mmap_mode="r") for path in self._spilt[name]]

    def __contains__(self, name: str) -> bool:
        return name in self._memory or name in self._spilt

    def close(self) -> None:
        self._memory.clear()
        self._spilt.clear()
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None


@dataclass
class _Counted:
    """What the scoring needs of some tiles, counted in the pass over them (segmentation.Scan.counted's input)."""

    names: list[str] = field(default_factory=list)
    counts: list[list[np.ndarray]] = field(default_factory=list)  # per tile and model: confusion counts
    agreement: list[list[float]] = field(default_factory=list)  # per tile: each pair's share of equal pixels
    shown: list[list[np.ndarray]] = field(default_factory=list)  # per tile and model: pixels per class
    truth_shown: list[np.ndarray] = field(default_factory=list)  # per tile: scored truth pixels per class
    pixels: int = 0

    def add(
        self,
        name: str,
        truth: np.ndarray,
        predicted: Sequence[np.ndarray],
        size: int,
        agreement: list[float],
        shown: list[np.ndarray],
    ) -> np.ndarray:
        """Count one tile's scored pixels (truth codes and each model's, aligned); its confusion counts per model."""
        tile = np.stack([confusion(truth, codes, size) for codes in predicted])
        self.names.append(name)
        self.counts.append(list(tile))
        self.agreement.append(agreement)
        self.shown.append(shown)
        self.truth_shown.append(np.bincount(truth, minlength=size))
        self.pixels += int(truth.size)
        return tile

    def stacked(self, models: int, size: int) -> np.ndarray:
        """tiles × models × classes × classes (earlier tiles met fewer classes: zeros where they had none)."""
        out = np.zeros((len(self.counts), models, size, size), dtype=np.int64)
        for j, tile in enumerate(self.counts):
            for i, matrix in enumerate(tile):
                out[j, i, : matrix.shape[0], : matrix.shape[1]] = matrix
        return out

    def scan(self, runs: Sequence[ModelRun], classes: Sequence[str], stacked: np.ndarray | None = None) -> Any:
        from orchestrator.compare import segmentation

        return segmentation.Scan.counted(
            self.names,
            [run.model for run in runs],
            classes,
            self.stacked(len(runs), len(classes)) if stacked is None else stacked,
            self.agreement,
            self.shown,
            self.truth_shown,
        )


def _segmentation(
    runs: Sequence[ModelRun],
    grids: Sequence[geo.Grid],
    source: Polygons | Raster,
    out_dir: Path,
    regions: geo.Layer | None,
    check: Callable[[], None],
) -> Aligned:
    by_name = [{str(item["name"]): item for item in run.items} for run in runs]
    vocabulary = _Vocabulary(source.names, runs)
    named_classes = len(vocabulary.names.names)  # the truth's and the models' named classes; then ids met ("#7")
    region_names = Names()
    region_codes = np.array([region_names.code(v) for v in regions.values], dtype=np.int32) if regions else None
    parts: dict[int, _Counted] = {}  # per region code, its tiles' counts
    whole = _Counted()
    files: dict[str, Path] = {}  # the scored tiles' truth (written for the tiles the page draws: write_truth)
    scored_total = ignored_total = 0
    ignored_tiles: list[str] = []
    labelled = np.zeros(0, dtype=np.int64)  # scored pixels per truth class code
    folder = out_dir / "truth"
    held = TileArrays()

    def read(grid: geo.Grid) -> tuple[np.ndarray, list[np.ndarray]]:
        """The tile's masks, and its truth: polygons burnt, or a label raster's ids (named in order, below)."""
        masks = []
        for run, items in zip(runs, by_name, strict=True):
            item = items.get(grid.name)
            if item is None or not item.get("mask"):
                raise OperationError(f"model {run.model!r} has no mask for {grid.name!r}")
            mask = _read_mask(item["mask"])
            if mask.shape != grid.shape:
                raise OperationError(
                    f"model {run.model!r}'s mask for {grid.name!r} is {mask.shape[1]}×{mask.shape[0]} "
                    f"pixels, its tile {grid.width}×{grid.height}"
                )
            masks.append(mask)
        return (source.labels(grid) if isinstance(source, Polygons) else source.raster.read(grid)), masks

    # PIL's decoding and GDAL's rasterizing and reading run without the GIL: two threads read tiles ahead of the
    # counting
    tiles = threads.map_in_order(read, grids, threads=READERS, ahead=AHEAD, name="geotruth")
    try:
        for index, (grid, (read_truth, masks)) in enumerate(zip(grids, tiles, strict=True)):
            check()
            codes = read_truth if isinstance(source, Polygons) else source.codes(read_truth)
            valid = np.ones(grid.shape, dtype=bool)
            for items, mask in zip(by_name, masks, strict=True):
                nodata = items[grid.name].get("nodata")
                if nodata is not None:
                    valid &= mask != nodata
            scored = valid & (codes >= 0)
            count = int(np.count_nonzero(scored))
            scored_total += count
            ignored_total += grid.width * grid.height - count
            held.put(grid.name, [*masks, np.where(scored, codes, IGNORE).astype(np.uint16)])
            if count == 0:
                ignored_tiles.append(grid.name)
                continue
            truth_codes = codes[scored]
            found = np.bincount(truth_codes)  # the truth classes labelling scored pixels
            if found.size > labelled.size:
                labelled = np.pad(labelled, (0, found.size - labelled.size))
            labelled[: found.size] += found
            files[grid.name] = folder / f"{index:06d}.png"
            truth_flat = vocabulary.truth_codes(source.names, truth_codes)
            named = [vocabulary.model_codes(i, mask) for i, mask in enumerate(masks)]  # int32 codes
            size = len(vocabulary.names.names)
            predicted = [mask[scored] for mask in named]
            agreement = [
                float(np.count_nonzero(named[a] == named[b])) / named[a].size
                for a, b in itertools.combinations(range(len(named)), 2)
            ]
            shown = [np.bincount(mask.ravel(), minlength=size) for mask in named]
            whole.add(grid.name, truth_flat, predicted, size, agreement, shown)
            if regions is not None and region_codes is not None:
                places = regions.burn(grid, region_codes)[scored]  # each scored pixel's region
                for code in np.unique(places):
                    if code < 0:
                        continue
                    inside = places == code
                    parts.setdefault(int(code), _Counted()).add(
                        grid.name, truth_flat[inside], [p[inside] for p in predicted], size, agreement, shown
                    )
    except BaseException:
        held.close()
        raise
    finally:
        tiles.close()  # its threads stop with it
    if scored_total == 0:
        held.close()
        raise OperationError(
            f"{source.source} overlaps the predicted tiles but labels none of their valid pixels "
            "(every pixel it covers is nodata in the input or outside its features)"
        )
    size = len(vocabulary.names.names)
    classes = _shown_names(vocabulary.names.names, runs)
    stacked = whole.stacked(len(runs), size)
    truth = Truth(
        kind="masks",
        values=dict(files),
        source=_described(source),
        labels=list(source.names.names),
        ignore_index=IGNORE,
    )
    truth.counted = whole.scan(runs, classes, stacked)
    # The per-class figures: named classes and ids met in scored pixels, not ids only met in nodata ("#255").
    totals = stacked.sum(axis=(0, 1))
    keep = np.flatnonzero((np.arange(size) < named_classes) | (totals.sum(axis=0) + totals.sum(axis=1) > 0))
    aligned = Aligned(
        "segmentation",
        _keep(runs, files),
        truth,
        _described(source),
        list(source.names.names),
        [source.names.names[int(c)] for c in np.flatnonzero(labelled)],
        scored_total,
        ignored_total,
        ignored_tiles,
        {g.name: g for g in grids},
        counts=stacked[:, :, keep][:, :, :, keep],
        vocabulary=[vocabulary.names.names[k] for k in keep],
        held=held,
    )
    for code, name in enumerate(region_names.names):
        part = parts.get(code)
        if part is None:
            continue
        region_truth = Truth(
            kind="masks",
            values={tile: files[tile] for tile in part.names},
            source=f"{truth.source}, region {name!r}",
            labels=list(source.names.names),
            ignore_index=IGNORE,
        )
        region_truth.counted = part.scan(runs, classes)
        aligned.regions.append(Subset(name, _keep(runs, region_truth.values), region_truth, part.pixels))
    return aligned


def _shown_names(names: Sequence[str], runs: Sequence[ModelRun]) -> list[str]:
    """Each class as the report shows it: as the first model that names it spells it, else as the truth does."""
    spelt: dict[str, str] = {}
    for label in itertools.chain(*(run.labels for run in runs)):
        spelt.setdefault(str(label).casefold(), str(label))
    return [spelt.get(name.casefold(), name) for name in names]


def _write_png(path: Path, codes: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(codes).save(path, format="PNG", compress_level=1)  # uint16: a 16-bit greyscale PNG


def _classification(
    runs: Sequence[ModelRun],
    grids: Sequence[geo.Grid],
    source: Polygons | Raster,
    rule: str,
    regions: geo.Layer | None,
    check: Callable[[], None],
) -> Aligned:
    from rasterio.transform import Affine

    classes: dict[str, str] = {}
    ignored: list[str] = []
    region_names = Names()
    region_codes = np.array([region_names.code(v) for v in regions.values], dtype=np.int32) if regions else None
    members: dict[int, list[str]] = {}
    for grid in grids:
        check()
        t = grid.transform
        x, y = grid.centre
        point = geo.Grid(grid.name, grid.crs, Affine(t.a, t.b, x - t.a / 2, t.d, t.e, y - t.e / 2), 1, 1)
        if rule == "centre":
            code = int(source.labels(point)[0, 0])
        else:
            codes = source.labels(grid)
            found = np.bincount(codes[codes >= 0].ravel())
            code = int(np.argmax(found)) if found.size else geo.UNLABELLED
        if code < 0:
            ignored.append(grid.name)
            continue
        classes[grid.name] = source.names.names[code]
        if regions is not None and region_codes is not None:
            place = int(regions.burn(point, region_codes)[0, 0])
            if place >= 0:
                members.setdefault(place, []).append(grid.name)
    if not classes:
        raise OperationError(
            f"{source.source} overlaps the predicted tiles but gives none of them a class (by the {rule} rule)"
        )
    truth = Truth(kind="classes", values=classes, source=_described(source, rule))
    aligned = Aligned(
        "classification",
        _keep(runs, classes),
        truth,
        truth.source,
        list(source.names.names),
        sorted(set(classes.values()), key=str.casefold),
        ignored_inputs=ignored,
        grids={g.name: g for g in grids},
    )
    for code, name in enumerate(region_names.names):
        tiles = members.get(code)
        if tiles:
            values = {t: classes[t] for t in tiles}
            part = Truth(kind="classes", values=values, source=f"{truth.source}, region {name!r}")
            aligned.regions.append(Subset(name, _keep(runs, values), part, None))
    return aligned


def _keep(runs: Sequence[ModelRun], names: dict[str, Any]) -> list[ModelRun]:
    """Each run with only the predictions of the named tiles."""
    return [
        ModelRun(run.model, run.task, [item for item in run.items if str(item["name"]) in names], run.stats, run.labels)
        for run in runs
    ]


def _described(source: Polygons | Raster, rule: str | None = None) -> str:
    how = (
        "rasterized onto each tile's grid"
        if isinstance(source, Polygons)
        else "resampled onto each tile's grid by nearest neighbour"
    )
    if rule is not None:
        how = f"each tile's class by the {rule} rule"
    return f"{source.source}, {how}"


def _check_classes(aligned: Aligned, runs: Sequence[ModelRun]) -> None:
    known = {label.casefold() for run in runs for label in run.labels}
    if not known and aligned.kind == "classification":
        known = {str(label).casefold() for run in runs for item in run.items for label in item.get("labels") or []}
    if not any(name.casefold() in known for name in aligned.present):
        models = sorted({label for run in runs for label in run.labels}, key=str.casefold)
        hint = (
            " (a label raster's ids are named by `classes`, or its CLASSES tag)"
            if all(name.isdigit() for name in aligned.present)
            else ""
        )
        raise OperationError(
            f"the truth's classes ({', '.join(aligned.present[:20])}) match none of the models' "
            f"labels ({', '.join(models[:20]) or 'none'}); classes are matched by name{hint}"
        )


# --- the report --------------------------------------------------------------------------------------------------


def extend(
    report: dict[str, Any],
    aligned: Aligned,
    compare: Callable[..., dict[str, Any]],
    seed: int = 0,
    n_resamples: int = 1000,
) -> dict[str, Any]:
    """Add to a comparison's report what geography gave: pixels scored, unmatched classes, per-region results."""
    from orchestrator.compare import report as reports

    truth_names = {n.casefold() for n in aligned.present}
    report["scored_pixels"] = aligned.scored_pixels
    report["ignored_pixels"] = aligned.ignored_pixels
    report["ignored_inputs"] = len(aligned.ignored_inputs)
    report["classes"] = {
        "truth": aligned.present,
        "truth_only": [
            n
            for n in aligned.present
            if not any(n.casefold() == label.casefold() for run in aligned.runs for label in run.labels)
        ],
        "model_only": {
            run.model: [label for label in run.labels if label.casefold() not in truth_names] for run in aligned.runs
        },
    }
    if aligned.counts is not None:
        _per_class_intervals(report, aligned, seed, n_resamples)
    regions = []
    for subset in aligned.regions:
        part = compare(subset.runs, subset.truth)
        regions.append(
            {
                "region": subset.name,
                "scored_pixels": subset.scored_pixels,
                "inputs": part["inputs"],
                "models": [{k: v for k, v in m.items() if k not in SPEED_KEYS} for m in part["models"]],
                "pairs": part["pairs"],
                "best": part.get("best"),
            }
        )
    if aligned.regions or report.get("regions") is not None:
        report["regions"] = reports.json_safe(regions)
    sentence = _regions_verdict(report)
    if sentence:
        report["verdict"] = f"{report['verdict'].rstrip('.')}. {sentence}"
    notes = _classes_note(report)
    if notes:
        report["verdict"] = f"{report['verdict'].rstrip('.')}. {notes}"
    return report


def _per_class_intervals(report: dict[str, Any], aligned: Aligned, seed: int, n_resamples: int) -> None:
    """Per model, each class's IoU with its 95 % bootstrap interval over tiles (from the tiles' confusion counts)."""
    from orchestrator.compare import segmentation, stats

    counts = aligned.counts
    assert counts is not None
    n, m, g, _ = counts.shape
    diag = np.diagonal(counts, axis1=2, axis2=3).astype(float)  # n × m × g
    rows, cols = counts.sum(axis=3).astype(float), counts.sum(axis=2).astype(float)
    iou, _, _ = segmentation.scores(diag.sum(axis=0), rows.sum(axis=0), cols.sum(axis=0))
    flat = [part.reshape(n, m * g) for part in (diag, rows, cols)]

    def statistic(idx: np.ndarray) -> np.ndarray:
        weights = stats.resample_weights(idx, n)
        d, r, c = ((weights @ part).reshape(-1, m, g) for part in flat)
        values, _, _ = segmentation.scores(d, r, c)
        return values.reshape(-1, m * g).T

    boot = stats.bootstrap(statistic, n, n_resamples=min(n_resamples, stats.IMAGE_RESAMPLES), seed=seed)
    for i, model in enumerate(report["models"]):
        shown: dict[str, Any] = {}
        for c, name in enumerate(aligned.vocabulary):
            if np.isnan(iou[i, c]):
                continue
            interval = boot.interval(i * g + c) if boot else None
            shown[name] = {
                "iou": float(iou[i, c]),
                "ci": interval,
                "truth_pixels": int(rows[:, i, c].sum()),
                "predicted_pixels": int(cols[:, i, c].sum()),
            }
        model["per_class_iou_intervals"] = shown


def _ranking(models: list[dict[str, Any]], metric: str, higher: bool) -> list[str]:
    scored = [m for m in models if m.get(metric) is not None]
    return [m["model"] for m in sorted(scored, key=lambda m: m[metric], reverse=higher)]


def _regions_verdict(report: dict[str, Any]) -> str:
    from orchestrator.compare import text

    regions = report.get("regions") or []
    metric, higher = report.get("headline"), report.get("higher_is_better")
    if not regions or not metric:
        return ""
    label = text.HEADLINE[report["kind"]][2]
    overall = _ranking(report["models"], metric, bool(higher))
    changed = []
    for region in regions:
        order = _ranking(region["models"], metric, bool(higher))
        if len(order) >= 2 and order != [m for m in overall if m in order]:
            values = {m["model"]: m.get(metric) for m in region["models"]}
            changed.append(
                f"{order[0]} leads in {region['region']!r} ({label} {text.number(values[order[0]])} vs "
                f"{text.number(values[order[1]])} for {order[1]})"
            )
    if not changed:
        return f"The ranking is the same in each of the {len(regions)} regions"
    shown = "; ".join(changed[:5]) + (f"; and {len(changed) - 5} more regions" if len(changed) > 5 else "")
    return f"The ranking changes between regions: {shown}"


def _classes_note(report: dict[str, Any]) -> str:
    classes = report.get("classes") or {}
    parts = []
    if classes.get("truth_only"):
        parts.append(f"truth classes no model knows: {', '.join(classes['truth_only'][:10])}")
    missing = {model: labels for model, labels in (classes.get("model_only") or {}).items() if labels}
    if missing:
        parts.append(
            "model classes absent from the truth: "
            + "; ".join(f"{model}: {', '.join(labels[:10])}" for model, labels in missing.items())
        )
    return ("Not scored: " + "; ".join(parts)) if parts else ""
