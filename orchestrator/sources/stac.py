"""import_from_stac: find items in a STAC API or a static catalog, then fetch the assets asked for.

A STAC API root (one that conforms to item-search) is searched with pystac-client; a static
catalog, collection, item or item collection is walked with pystac, and the criteria evaluated
here (`stac_match`). Either way every document is read through our own reader: over HTTP by the
policed client (URL policy on each request and redirect), or, for a catalog under the data root,
as files that must stay under it. A catalog read over HTTP may not point at the server's files.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pystac

from orchestrator.datasets import FileRef
from orchestrator.engine import OperationError
from orchestrator.sources import local
from orchestrator.sources.remote import PolicedClient, shown
from orchestrator.sources.stac_assets import Asset, Fetcher
from orchestrator.sources.stac_documents import ApiReader, Documents, is_http, said
from orchestrator.sources.stac_match import Criteria
from orchestrator.sources.url import UrlPolicy
from orchestrator.transforms import rasters

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
ITEM_SEARCH = "/item-search"


@dataclass(frozen=True)
class StacRequest:
    """import_from_stac's parameters, as the op received them."""

    url: str
    collections: Sequence[str] | None = None
    bbox: Sequence[float] | None = None
    datetime: str | None = None
    query: Mapping[str, Any] | None = None
    filter: Mapping[str, Any] | None = None
    assets: Sequence[str] | None = None
    stack: bool = False
    max_items: int = 10


def check_bbox(bbox: Sequence[float] | None) -> None:
    """[west, south, east, north] in degrees, each in range and in order (an antimeridian crossing is two boxes)."""
    if bbox is None:
        return
    west, south, east, north = bbox
    for name, value, limit in (("west", west, 180), ("south", south, 90), ("east", east, 180), ("north", north, 90)):
        if not -limit <= value <= limit:
            raise OperationError(f"bbox {name} {value} is out of range: WGS84 degrees within ±{limit}")
    if south >= north:
        raise OperationError(f"bbox south {south} must be below north {north}: give [west, south, east, north]")
    if west >= east:
        raise OperationError(
            f"bbox west {west} must be left of east {east}: give [west, south, east, north] "
            "(a box crossing the antimeridian: import each side separately)"
        )


def import_from_stac(
    request: StacRequest,
    *,
    data_root: Path,
    policy: UrlPolicy,
    out_dir: Path,
    max_samples: int | None,
    reserved: Sequence[local.Reserved] = (),
    check_cancelled: Callable[[], None] = lambda: None,
    log: Any = None,
) -> list[FileRef]:
    """The assets of the items that match `request`, as rasters named <item id>/<asset key>.tif (or <item id>.tif)."""
    check_bbox(request.bbox)
    datetime = normalized_datetime(request.datetime)
    with PolicedClient(policy, check_cancelled) as client:
        documents = Documents(client, data_root.resolve(), reserved)
        items = find_items(documents, request, datetime)
        fetcher = Fetcher(client, out_dir, max_samples, check_cancelled, log)
        refs: list[FileRef] = []
        for item in items:
            check_cancelled()
            refs.extend(_fetch_item(fetcher, documents, item, request))
        if log is not None:
            log.info(
                f"import_from_stac: {len(items)} item(s), {len(refs)} file(s), {client.requests} request(s), "
                f"{client.bytes_received} bytes received"
            )
    return refs


def normalized_datetime(text: str | None) -> str | None:
    """An RFC 3339 instant or interval ("2024-06-01/2024-06-30", "2024", "../2024-01-01") as "start/end"."""
    if text is None:
        return None
    from pystac_client.item_search import ItemSearch

    try:  # pystac-client's own reading of it: the same text an API receives
        return ItemSearch("", datetime=text).get_parameters()["datetime"]
    except Exception as exc:  # noqa: BLE001 - pystac-client raises bare Exception for a bad datetime
        raise OperationError(f"datetime {text!r} is not an RFC 3339 instant or interval: {exc}") from None


# Finding items


def find_items(documents: Documents, request: StacRequest, datetime: str | None) -> list[pystac.Item]:
    """The items that match, at most max_items, from an API search or a walk of a static catalog."""
    href = request.url
    if is_http(href):
        documents.remote_origin = True
    else:
        href = str(_local_entry(documents, href))
    root = documents.first(href)
    if _is_api(root):
        items = _search_api(documents, href, request, datetime)
    else:
        if request.filter is not None:
            raise OperationError(
                f"{documents.shown(href)} is a static catalog, not a STAC API: filter (CQL2) needs an "
                "API; use bbox, datetime and query, which are evaluated here on static catalogs"
            )
        bbox = None
        if request.bbox:
            west, south, east, north = request.bbox  # four numbers: import_from_stac ran check_bbox
            bbox = (west, south, east, north)
        criteria = Criteria(
            frozenset(request.collections) if request.collections else None,
            bbox,
            datetime,
            request.query,
        )
        items = _walk_static(documents, href, root, criteria, request.max_items)
    if not items:
        raise OperationError(f"no item of {documents.shown(href)} matches {_criteria_text(request)}")
    return items


def _local_entry(documents: Documents, relative: str) -> Path:
    """A catalog under the data root: its JSON file, or a folder holding catalog.json / collection.json."""
    if Path(relative).is_absolute():
        raise OperationError(f"url {relative!r}: give an http(s) URL, or a path relative to the data root")
    found = local.find_local_files(documents.data_root, relative, documents.reserved)
    if len(found) == 1 and Path(relative).name in found:
        return next(iter(found.values()))
    for name in ("catalog.json", "collection.json"):
        if name in found:
            return found[name]
    raise OperationError(f"folder {relative!r} holds no catalog.json or collection.json; give the catalog's JSON file")


def _is_api(root: Mapping[str, Any]) -> bool:
    conforms = root.get("conformsTo") or []
    links = root.get("links") or []
    return root.get("type") == "Catalog" and (
        any(isinstance(c, str) and c.endswith(ITEM_SEARCH) for c in conforms)
        or any(isinstance(link, dict) and link.get("rel") == "search" for link in links)
    )


def _search_api(documents: Documents, href: str, request: StacRequest, datetime: str | None) -> list[pystac.Item]:
    from pystac_client import Client, ConformanceClasses
    from pystac_client.exceptions import APIError

    client = Client.open(href, stac_io=ApiReader(documents))
    for asked, conformance, what in (
        (request.query, ConformanceClasses.QUERY, "query"),
        (request.filter, ConformanceClasses.FILTER, "filter (CQL2)"),
    ):
        if asked is not None and not client.conforms_to(conformance):
            raise OperationError(
                f"the STAC API at {shown(href)} does not support {what}; its conformance classes "
                f"do not include the {what.split()[0]} extension"
            )
    try:
        search = client.search(
            collections=list(request.collections) if request.collections else None,
            bbox=list(request.bbox) if request.bbox else None,
            datetime=datetime,
            query=dict(request.query) if request.query else None,
            filter=dict(request.filter) if request.filter else None,
            filter_lang="cql2-json" if request.filter else None,
            max_items=request.max_items,
            limit=min(request.max_items, 100),
        )
        return list(search.items())
    except APIError as exc:
        raise OperationError(f"the STAC API at {shown(href)} refused the search: {said(str(exc))}") from None


def _walk_static(
    documents: Documents, href: str, root: Mapping[str, Any], criteria: Criteria, max_items: int
) -> list[pystac.Item]:
    try:
        if root.get("type") == "FeatureCollection":
            candidates: Iterator[pystac.Item] = iter(pystac.ItemCollection.from_dict(dict(root)).items)
        else:
            read = pystac.read_file(href, stac_io=documents)
            if isinstance(read, pystac.Item):
                candidates = iter([read])
            elif isinstance(read, pystac.Catalog):  # collections too
                candidates = read.get_items(recursive=True)
            else:  # pystac reads every STAC document as one of the two
                raise OperationError(f"{documents.shown(href)} is neither a STAC catalog nor an item")
        found: list[pystac.Item] = []
        for item in candidates:
            if criteria.matches(item):
                if item.get_self_href() is None:
                    item.set_self_href(href)  # an item collection's relative asset hrefs resolve from its URL
                found.append(item)
                if len(found) >= max_items:
                    break
        return found
    except pystac.STACError as exc:
        raise OperationError(f"{documents.shown(href)} is not a readable STAC catalog: {exc}") from None


def _criteria_text(request: StacRequest) -> str:
    given = {name: getattr(request, name) for name in ("collections", "bbox", "datetime", "query", "filter")}
    shown_given = ", ".join(f"{name}={json.dumps(value)}" for name, value in given.items() if value is not None)
    return f"({shown_given})" if shown_given else "(it holds no items)"


# Fetching assets


def _fetch_item(fetcher: Fetcher, documents: Documents, item: pystac.Item, request: StacRequest) -> list[FileRef]:
    folder = safe_name(item.id)
    assets = [_asset(documents, item, key) for key in _chosen_keys(item, request)]
    described = stac_item_facts(item)
    if request.stack:
        target = fetcher.out_dir / f"{folder}.tif"
        fetcher.fetch_stack(assets, request.bbox, target)
        return [_ref(f"{folder}.tif", target, described, None)]
    refs = []
    for asset in assets:
        fetcher.check_cancelled()
        if request.bbox is not None:
            name = f"{folder}/{safe_name(asset.key)}.tif"
            path = fetcher.fetch_window(asset, request.bbox, fetcher.out_dir / name)
        else:
            name = f"{folder}/{safe_name(asset.key)}{_suffix(asset)}"
            path = fetcher.fetch_whole(asset, fetcher.out_dir / name)
        refs.append(_ref(name, path, described, asset.band_names))
    return refs


def _chosen_keys(item: pystac.Item, request: StacRequest) -> list[str]:
    if request.assets is not None:
        missing = [key for key in request.assets if key not in item.assets]
        if missing:
            raise OperationError(
                f"item {item.id!r} has no asset {', '.join(map(repr, missing))}; its assets: "
                f"{', '.join(sorted(item.assets)) or 'none'}"
            )
        return list(request.assets)
    keys = [key for key, asset in item.assets.items() if _geotiff_type(asset.media_type, asset.href)]
    if not keys:
        raise OperationError(
            f"item {item.id!r} has no GeoTIFF asset; name the ones to fetch with assets (its "
            f"assets: {', '.join(sorted(item.assets)) or 'none'})"
        )
    return keys


def _geotiff_type(media_type: str | None, href: str) -> bool:
    if media_type:
        return "tiff" in media_type.lower()
    return rasters.named_like_raster(href.split("?", 1)[0])


def _asset(documents: Documents, item: pystac.Item, key: str) -> Asset:
    asset = item.assets[key]
    href = asset.get_absolute_href() or asset.href
    if not is_http(href):
        href = str(documents.local_path(href))
    names, tags = band_names(asset)
    scales, offsets = _scaling(asset)
    return Asset(item.id, key, href, asset.media_type, names, tags, scales, offsets)


def band_names(asset: pystac.Asset) -> tuple[list[str | None] | None, list[dict[str, str]] | None]:
    """Each band's name from STAC (eo:bands, STAC 1.1 bands, raster:bands): its common name, else its name.

    The common name ("nir", "red") is what spectral indices and most users call a band; the
    band's own name ("B08") is kept beside it as band metadata (tags) in the written file.
    """
    fields = asset.extra_fields
    declared = fields.get("eo:bands") or fields.get("bands") or fields.get("raster:bands")
    if not isinstance(declared, list) or not declared or not all(isinstance(b, dict) for b in declared):
        return None, None
    names: list[str | None] = []
    tags: list[dict[str, str]] = []
    for band in declared:
        common = band.get("common_name") or band.get("eo:common_name")
        own = band.get("name")
        names.append(str(common or own) if (common or own) else None)
        tags.append({k: str(v) for k, v in (("name", own), ("common_name", common)) if v})
    return (names if any(names) else None), tags


def _scaling(asset: pystac.Asset) -> tuple[list[float] | None, list[float] | None]:
    bands = asset.extra_fields.get("raster:bands") or asset.extra_fields.get("bands")
    if not isinstance(bands, list) or not all(isinstance(b, dict) for b in bands):
        return None, None
    scales = [float(b.get("scale", b.get("raster:scale", 1.0))) for b in bands]
    offsets = [float(b.get("offset", b.get("raster:offset", 0.0))) for b in bands]
    changed = any(s != 1 for s in scales) or any(o != 0 for o in offsets)
    return (scales, offsets) if changed else (None, None)


def stac_item_facts(item: pystac.Item) -> dict[str, Any]:
    """What results keep of an item: id, datetime, bbox, cloud cover (and its collection)."""
    when = item.datetime or item.common_metadata.start_datetime
    return {
        "id": item.id,
        "collection": item.collection_id,
        "datetime": when.isoformat().replace("+00:00", "Z") if when else None,
        "bbox": list(item.bbox) if item.bbox else None,
        "eo:cloud_cover": item.properties.get("eo:cloud_cover"),
    }


def _ref(name: str, path: Path, item: dict[str, Any], names: list[str | None] | None) -> FileRef:
    meta, count = _raster_facts(path)
    if names and (count is None or len(names) == count):
        meta["bands"] = names  # STAC's names, also for a file fetched as published with descriptions of its own
    meta["stac_item"] = item
    return FileRef(name, path, meta)


def _raster_facts(path: Path) -> tuple[dict[str, Any], int | None]:
    """A fetched file's raster facts and band count from its header; ({}, None) when it is not a GeoTIFF."""
    import rasterio
    from rasterio.errors import RasterioError

    if not rasters.has_tiff_magic(path):
        return {}, None
    try:
        with rasters.gdal_env(), rasterio.open(Path(os.path.abspath(path)), driver="GTiff") as dataset:
            return rasters.facts(dataset), dataset.count
    except (RasterioError, OSError):
        return {}, None


def _suffix(asset: Asset) -> str:
    if asset.is_geotiff:
        return ".tif"
    suffix = Path(urlsplit(asset.href).path).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,8}", suffix) else ""


def safe_name(text: str) -> str:
    """An item id or asset key as one path segment: other characters become _, never '..' or a '/'."""
    cleaned = _UNSAFE.sub("_", text).strip("._")
    return cleaned or "item"
