"""Earth-observation pipelines the server's pre-launch checks let through as valid, and a body its client stops
sending: each is now refused at the parameter at fault (POST /validate's 422 lists these checks' problems, as
orchestrator/assets/checked_config.py explains), or with a 400 rather than an error of the gateway's.

The checks run in process here, with the real catalog and the real checks, as the code location runs them."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.config import Settings
from api.main import create_app
from harness import asgi_post


def problems(tmp_path: Path, instructions: list[dict[str, Any]], allow_private: bool = False) -> list[tuple[str, str]]:
    """(JSON Pointer, message) of each problem the code location's checks find, as /validate answers them."""
    from orchestrator import preflight
    from orchestrator.assets.repository import CATALOG
    from orchestrator.assets.resources import OpResources, ServerSettings

    (tmp_path / "data" / "samples-eo").mkdir(parents=True, exist_ok=True)
    settings = ServerSettings(
        data_root=str(tmp_path / "data"), artifact_root=str(tmp_path / "artifacts"), url_allow_private=allow_private
    )
    found = preflight.check_request(instructions, CATALOG, OpResources(**settings.resources()))
    return [(p.path, p.message) for p in found]


def op(name: str, **parameters: Any) -> dict[str, Any]:
    return {"operation": name, "parameters": parameters}


def stac(url: str) -> list[dict[str, Any]]:
    return [op("spectral_index", index="NDVI", data=op("import_from_stac", url=url, assets=["scene"]))]


STAC_URL = "/instructions/0/parameters/data/parameters/url"


def test_an_export_of_geometries_to_a_connection_the_server_lacks_is_refused_at_the_connection(tmp_path: Path):
    (tmp_path / "data" / "samples-eo").mkdir(parents=True)
    (tmp_path / "data" / "samples-eo" / "labels.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    table = op("read_table", data=op("import_from_local", path="samples-eo/labels.geojson"))
    found = problems(tmp_path, [op("export_to_database", data=table, connection="nowhere", table="eo_polygons")])
    assert [path for path, _ in found] == ["/instructions/0/parameters/connection"], found
    assert "nowhere" in found[0][1]


@pytest.mark.parametrize(
    "url,said",
    [
        ("samples-eo/stac/\x00catalog.json", "NUL"),
        ("samples-eo/" + "a" * 300 + "/catalog.json", "cannot be read"),
        ("http://[::1/stac", "not a valid http(s) URL"),
    ],
)
@pytest.mark.parametrize("allow_private", [False, True])
def test_a_stac_url_no_run_could_open_is_refused_at_the_url(tmp_path: Path, url: str, said: str, allow_private: bool):
    found = problems(tmp_path, stac(url), allow_private)
    assert [path for path, _ in found] == [STAC_URL], found
    assert said in found[0][1]


@pytest.mark.parametrize(
    "url",
    [
        "http://stac.example.com:99999/",  # a port past 65535
        "http://" + "a" * 64 + ".example.com/",  # a label IDNA refuses (at most 63)
        "http://stac..example.com/",  # an empty label
        "http://\u2488.example.com/",  # a character IDNA refuses
        "http://[v1.x]/",  # brackets around no IPv6 address
    ],
)
def test_a_stac_url_whose_host_cannot_be_read_is_refused_at_the_url(tmp_path: Path, url: str):
    found = problems(tmp_path, stac(url))
    assert found == [(STAC_URL, found[0][1])] and "not a valid http(s) URL" in found[0][1], found


def test_a_client_that_stops_sending_its_pipeline_is_a_400_not_an_error_of_the_gateway(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    app = create_app(Settings(dagster_url="http://127.0.0.1:9", artifact_root=str(tmp_path)))
    body = json.dumps({"instructions": stac("samples-eo/stac/catalog.json")}).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    with TestClient(app), caplog.at_level(logging.ERROR):  # its lifespan makes the Dagster client the route takes
        status, said = asgi_post(app, "/validate", headers, [body[:20]], then_gone=True)
    assert status == 400, said
    assert "before sending the whole request body" in said["message"]
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_a_crs_pyproj_cannot_read_is_refused_before_launch_at_the_crs(tmp_path: Path):
    """The op's own validators (here: pyproj parses the CRS) run on every literal before launch, as the run would
    run them when it reached the instruction; the JSON Schema the gateway checks cannot carry them."""
    (tmp_path / "data").mkdir(parents=True)
    (tmp_path / "data" / "scene.tif").write_bytes(b"")
    for crs in ("EPSG:999999", "FOO:bar"):
        warp = op("reproject_raster", data=op("import_from_local", path="scene.tif"), crs=crs)
        found = problems(tmp_path, [op("mosaic", data=warp)])
        assert [path for path, _ in found] == ["/instructions/0/parameters/data/parameters/crs"], found
        assert found[0][1].startswith("parameter 'crs': ") and crs in found[0][1], found
    good = op("reproject_raster", data=op("import_from_local", path="scene.tif"), crs="EPSG:4326")
    assert problems(tmp_path, [op("mosaic", data=good)]) == []


@pytest.mark.parametrize(
    "when,said",
    [("2024-13-45", "month must be in 1..12"), ("2024-06-30/2024-06-01", "ends before it starts")],
)
def test_a_stac_datetime_no_search_could_use_is_refused_before_launch_at_the_datetime(
    tmp_path: Path, when: str, said: str
):
    search = [
        op(
            "spectral_index",
            index="NDVI",
            data=op("import_from_stac", url="samples-eo/stac/catalog.json", datetime=when),
        )
    ]
    found = problems(tmp_path, search)
    assert [path for path, _ in found] == ["/instructions/0/parameters/data/parameters/datetime"], found
    assert said in found[0][1], found
