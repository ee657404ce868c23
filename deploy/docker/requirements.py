"""Print the requirements an image installs, read from pyproject.toml, one per line.

    python requirements.py PROFILE [--extras docker,k8s] [--pyproject PATH]

The Dockerfiles run it on pyproject.toml alone, before any source is copied, so the dependency
layer is rebuilt only when pyproject.toml changes; the versions stay written once, in pyproject.
A profile names the distributions an image needs (`None`: every project dependency); `--extras`
adds every requirement of those optional-dependency groups (e.g. `docker` for the DockerRunLauncher).
Standard library only: it runs on the bare python:3.11-slim image.
"""

from __future__ import annotations

import argparse
import re
import sys
import tomllib
from pathlib import Path

PROFILES: dict[str, list[str] | None] = {
    # The code location and the run workers it starts: the whole project.
    "code_server": None,
    # Dagster's webserver and daemon: no user code, the dagster family only (dagster-postgres brings
    # psycopg2, which dagster.yaml names as the driver).
    "dagster": ["dagster", "dagster-webserver", "dagster-postgres"],
    # The gateway: FastAPI plus what orchestrator.engine (validation) imports, and /docs' own Swagger UI assets.
    "gateway": [
        "fastapi",
        "uvicorn",
        "httpx",
        "pydantic",
        "pydantic-settings",
        "jsonschema",
        "tenacity",
        "fastapi-offline",
    ],
    # The model server: FastAPI, Pillow and the `models` extra (torch, transformers; onnxruntime and onnx for the
    # tabular tasks' and the multi-band image models' ONNX graphs; pystac for the STAC MLM card beside a model).
    "model_server": [
        "fastapi",
        "uvicorn",
        "pydantic",
        "pydantic-settings",
        "pillow",
        "numpy",
        "torch",
        "transformers",
        "onnxruntime",
        "onnx",
        "pystac",
    ],
}

_NAME = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)")


def normalize(name: str) -> str:
    """A distribution name as PEP 503 compares them (Pydantic_Settings == pydantic-settings)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_name(requirement: str) -> str:
    match = _NAME.match(requirement)
    if not match:
        raise ValueError(f"pyproject.toml: cannot read a distribution name in {requirement!r}")
    return normalize(match.group(1))


def requirements(pyproject: Path, profile: str, extras: list[str]) -> list[str]:
    """The requirement strings of `profile` plus those of the optional groups `extras`."""
    project = tomllib.loads(pyproject.read_text())["project"]
    groups: dict[str, list[str]] = project.get("optional-dependencies", {})
    unknown_extras = [extra for extra in extras if extra not in groups]
    if unknown_extras:
        raise ValueError(f"{pyproject}: no optional-dependencies group {unknown_extras}; it has {sorted(groups)}")
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(PROFILES)}")
    wanted = PROFILES[profile]
    chosen = list(project["dependencies"]) if wanted is None else []
    if wanted is not None:
        known = {requirement_name(r): r for r in [*project["dependencies"], *(r for g in groups.values() for r in g)]}
        missing = [name for name in wanted if normalize(name) not in known]
        if missing:
            raise ValueError(f"{pyproject}: profile {profile!r} needs {missing}, which pyproject.toml does not list")
        chosen = [known[normalize(name)] for name in wanted]
    for extra in extras:
        chosen += [r for r in groups[extra] if r not in chosen]
    return chosen


def _default_pyproject() -> Path:
    """Beside this script in an image's build folder; else the repository's own."""
    here = Path(__file__).resolve()
    beside = here.with_name("pyproject.toml")
    return beside if beside.exists() else here.parents[2] / "pyproject.toml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", choices=sorted(PROFILES))
    parser.add_argument("--extras", default="", help="comma-separated optional-dependency groups to add")
    parser.add_argument("--pyproject", type=Path, default=_default_pyproject())
    args = parser.parse_args(argv)
    extras = [extra.strip() for extra in args.extras.split(",") if extra.strip()]
    try:
        lines = requirements(args.pyproject, args.profile, extras)
    except (OSError, ValueError, KeyError) as exc:
        sys.stderr.write(f"requirements.py: {exc}\n")
        return 1
    sys.stdout.write("".join(f"{line}\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
