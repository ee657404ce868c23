"""import_from_stac against a real STAC API: stac-fastapi with pgstac on the machine's PostgreSQL (PostGIS).

The server runs in a virtual environment of its own (.venv-stac, made here from
stac_api_requirements.txt when missing: its pins are not ours), in a database of its own for the
session; items are loaded with pypgstac. Their assets are COGs served over HTTP with Range support.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
import sqlalchemy as sa
from pytest_httpserver import HTTPServer
from stac_samples import inner_bbox, item, ranged_files, wgs84_bounds, write_cog

from harness import free_port
from orchestrator.assets import ops
from orchestrator.assets.resources import Workspace
from orchestrator.engine import OperationError, RunContext
from services_databases import PG_ADMIN_URL

REPO = Path(__file__).resolve().parents[2]
VENV = REPO / ".venv-stac"
REQUIREMENTS = REPO / "tests" / "stac_api_requirements.txt"
COLLECTION = "s2-test"


def stac_python() -> Path:
    """The STAC server's Python, its virtual environment made (or remade when the pins change) first."""
    python = VENV / "bin" / "python"
    stamp = VENV / "installed-requirements.txt"
    wanted = REQUIREMENTS.read_text()
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(REPO / ".venv-stac.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two sessions at once: one installs, the other waits
        if not python.exists() or not stamp.exists() or stamp.read_text() != wanted:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True)
            subprocess.run(
                [str(python), "-m", "pip", "install", "-q", "-r", str(REQUIREMENTS)], check=True, timeout=900
            )
            stamp.write_text(wanted)
    return python


@pytest.fixture(scope="module")
def database() -> Iterator[str]:
    """A PostgreSQL database of this module's own, with PostGIS and pgstac's schema."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if conn.exec_driver_sql("SELECT 1 FROM pg_available_extensions WHERE name = 'postgis'").first() is None:
            pytest.skip("PostGIS is not installed on this PostgreSQL (Debian: postgresql-15-postgis-3)")
        name = f"constellation_stac_{uuid.uuid4().hex[:10]}"
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = sa.make_url(PG_ADMIN_URL).set(database=name)
    dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with sa.create_engine(url, isolation_level="AUTOCOMMIT").connect() as conn:
            conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS postgis")
        subprocess.run(
            [str(stac_python()), "-m", "pypgstac.pypgstac", "migrate", "--dsn", dsn],
            check=True,
            capture_output=True,
            timeout=300,
        )
        yield dsn
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="module")
def assets_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HTTPServer, Path]]:
    """The COGs the items point at, served with Range support."""
    folder = tmp_path_factory.mktemp("cogs")
    write_cog(folder / "B04.tif", 512, seed=4)
    write_cog(folder / "B08.tif", 512, seed=8)
    server = HTTPServer()
    server.start()
    server.expect_request(re.compile("/.*")).respond_with_handler(ranged_files(folder, []))
    try:
        yield server, folder
    finally:
        server.stop()


@pytest.fixture(scope="module")
def stac_api(database: str, assets_server: tuple[HTTPServer, Path], tmp_path_factory) -> Iterator[str]:
    """The STAC API's root URL, its items loaded."""
    server, folder = assets_server
    scene = wgs84_bounds(folder / "B04.tif")
    bands = {
        "B04": (server.url_for("/B04.tif"), [("B04", "red")]),
        "B08": (server.url_for("/B08.tif"), [("B08", "nir")]),
    }
    items = [
        item("A-june-clear", scene, "2024-06-05T10:00:00+00:00", 3.0, bands, COLLECTION),
        item("B-june-cloudy", scene, "2024-06-20T10:00:00+00:00", 70.0, bands, COLLECTION),
        item("C-july", scene, "2024-07-02T10:00:00+00:00", 10.0, bands, COLLECTION),
        item("D-far-away", [-70.0, -10.0, -69.0, -9.0], "2024-06-10T10:00:00+00:00", 1.0, bands, COLLECTION),
        item("E-other", scene, "2024-06-07T10:00:00+00:00", 2.0, bands, "other"),
    ]
    work = tmp_path_factory.mktemp("pgstac")
    python = stac_python()
    for collection in (COLLECTION, "other"):
        (work / f"{collection}.json").write_text(
            json.dumps(
                {
                    "type": "Collection",
                    "stac_version": "1.0.0",
                    "id": collection,
                    "description": "test scenes",
                    "license": "CC0-1.0",
                    "links": [],
                    "extent": {
                        "spatial": {"bbox": [[-180, -90, 180, 90]]},
                        "temporal": {"interval": [["2024-01-01T00:00:00Z", None]]},
                    },
                }
            )
        )
        _pypgstac(python, database, "collections", work / f"{collection}.json")
    (work / "items.ndjson").write_text("\n".join(json.dumps(one.to_dict(include_self_link=False)) for one in items))
    _pypgstac(python, database, "items", work / "items.ndjson")

    port = free_port()
    url = sa.make_url(database)
    env = {
        **os.environ,
        "PGUSER": url.username or "postgres",
        "PGPASSWORD": url.password or "unused",
        "PGHOST": url.host or "127.0.0.1",
        "PGPORT": str(url.port or 5432),
        "PGDATABASE": url.database or "",
    }
    log = (work / "server.log").open("w")
    process = subprocess.Popen(
        [
            str(python),
            "-m",
            "uvicorn",
            "stac_fastapi.pgstac.app:create_app",
            "--factory",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    root = f"http://127.0.0.1:{port}/"
    try:
        _wait_until_up(root, process, work / "server.log")
        yield root
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def _pypgstac(python: Path, dsn: str, table: str, path: Path) -> None:
    subprocess.run(
        [str(python), "-m", "pypgstac.pypgstac", "load", table, str(path), "--dsn", dsn, "--method", "upsert"],
        check=True,
        capture_output=True,
        timeout=120,
    )


def _wait_until_up(root: str, process: subprocess.Popen, log: Path, timeout_s: float = 60) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the STAC API exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(root, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"the STAC API did not answer within {timeout_s} s: {log.read_text()[-2000:]}")


@pytest.fixture
def ctx(tmp_path: Path) -> RunContext:
    (tmp_path / "data").mkdir()
    workspace = Workspace(
        data_root=str(tmp_path / "data"), artifact_root=str(tmp_path / "art"), url_allow_private=True
    )  # the test servers listen on 127.0.0.1
    return RunContext(run_dir=tmp_path / "run", resources=SimpleNamespace(workspace=workspace))


@pytest.fixture(scope="module")
def bbox(assets_server) -> list[float]:
    return inner_bbox(assets_server[1] / "B04.tif", 128, 128, 64, 64)


def ids(files) -> list[str]:
    return sorted({ref.meta["stac_item"]["id"] for ref in files})


def test_search_by_bbox_datetime_and_collection(ctx, stac_api, bbox):
    files = ops.import_from_stac(
        ctx, stac_api, collections=[COLLECTION], bbox=bbox, datetime="2024-06-01/2024-06-30", assets=["B08"]
    )
    assert ids(files) == ["A-june-clear", "B-june-cloudy"]  # not July's, not the one far away, not "other"
    ref = next(r for r in files if r.meta["stac_item"]["id"] == "A-june-clear")
    assert ref.name == "A-june-clear/B08.tif"
    assert ref.meta["width"] == 64 and ref.meta["height"] == 64 and ref.meta["bands"] == ["nir"]
    assert ref.meta["stac_item"]["eo:cloud_cover"] == 3.0 and ref.meta["stac_item"]["collection"] == COLLECTION


def test_search_with_the_query_extension(ctx, stac_api, bbox):
    files = ops.import_from_stac(
        ctx, stac_api, collections=[COLLECTION], bbox=bbox, query={"eo:cloud_cover": {"lt": 20}}, assets=["B04"]
    )
    assert ids(files) == ["A-june-clear", "C-july"]


def test_search_with_a_cql2_json_filter(ctx, stac_api, bbox):
    moderate = {
        "op": "and",
        "args": [
            {"op": ">=", "args": [{"property": "eo:cloud_cover"}, 5]},
            {"op": "<", "args": [{"property": "eo:cloud_cover"}, 50]},
        ],
    }
    files = ops.import_from_stac(ctx, stac_api, bbox=bbox, filter=moderate, assets=["B04"])
    assert ids(files) == ["C-july"]


def test_max_items_and_stack_over_an_api(ctx, stac_api, bbox):
    files = ops.import_from_stac(
        ctx, stac_api, collections=["other", COLLECTION], bbox=bbox, assets=["B08", "B04"], stack=True, max_items=2
    )
    assert len(files) == 2 and all(ref.meta["bands"] == ["nir", "red"] for ref in files)
    assert all(ref.name == f"{ref.meta['stac_item']['id']}.tif" for ref in files)


def test_no_match_says_what_was_asked(ctx, stac_api, bbox):
    with pytest.raises(OperationError, match=r"no item of .* matches \(collections=\[\"s2-test\"\], bbox="):
        ops.import_from_stac(ctx, stac_api, collections=[COLLECTION], bbox=bbox, datetime="2023-01-01/2023-12-31")


def test_a_filter_the_api_refuses_is_reported_with_its_reason(ctx, stac_api, bbox):
    with pytest.raises(OperationError, match=r"the STAC API answered HTTP \d{3} to POST http://.*/search: "):
        ops.import_from_stac(ctx, stac_api, bbox=bbox, filter={"op": "no-such-op", "args": []})
