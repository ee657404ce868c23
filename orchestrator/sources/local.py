"""Reading files from the server's data root, and nothing outside it; writing exports under the output root.

Neither ever touches the folders where the server keeps runs (`reserved_folders`): a local
artifact root (each run's kept outputs, progress and results), DAGSTER_HOME (where Dagster keeps
each step's output, which a re-execution loads) and a run's scratch folder. The data and output
roots are the operator's to choose, and may well contain them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from orchestrator.datasets import Exported, FileRef
from orchestrator.engine import OperationError
from orchestrator.runstore import is_store_url

if TYPE_CHECKING:
    from orchestrator.preflight import Finding, Preflight


@dataclass(frozen=True)
class Reserved:
    """A folder imports never read and exports never write, and the setting that puts it there."""

    path: Path  # resolved
    setting: str

    def holds(self, path: Path) -> bool:
        return path == self.path or path.is_relative_to(self.path)


def reserved_folders(artifact_root: str | Path | None, run_dir: Path | None = None) -> list[Reserved]:
    """The artifact root when it is a folder (with an s3:// root: the run's scratch folder of runs,
    `<scratch>/runs/`, above `run_dir`), and DAGSTER_HOME."""
    found = []
    if artifact_root and not is_store_url(artifact_root):
        runs = Reserved(Path(artifact_root).resolve(), "CONSTELLATION_ARTIFACT_ROOT, where the server keeps runs")
        found.append(runs)
    elif artifact_root and run_dir is not None:
        found.append(Reserved(run_dir.resolve().parent, "the scratch folder where this run keeps its files"))
    if os.environ.get("DAGSTER_HOME"):
        found.append(Reserved(Path(os.environ["DAGSTER_HOME"]).resolve(), "DAGSTER_HOME, Dagster's own storage"))
    return found


def _check(path: Path, shown: str, reserved: Iterable[Reserved], action: str) -> None:
    for area in reserved:
        if area.holds(path):
            raise OperationError(f"{shown!r} lies in {area.setting}: {action} never go there; choose another path")


def find_local_files(root: Path, relative: str, reserved: Iterable[Reserved] = ()) -> dict[str, Path]:
    """The regular files at `relative` (a file or a folder, recursively) under `root`.

    Links are allowed only when their target also lies under `root`. A path in (or a folder
    holding) a `reserved` folder is refused.
    """
    reserved = list(reserved)
    root = root.resolve()
    target = locate(root, relative, reserved)
    if target.is_file():
        return {Path(relative).name: target}
    files: dict[str, Path] = {}
    visited = {target}
    # Links are followed (when they stay inside the root), so a linked folder is not skipped.
    for folder, dirs, names in os.walk(root / relative, followlinks=True):
        base = Path(folder)
        for d in sorted(dirs):
            shown = (base / d).relative_to(root / relative).as_posix()
            real = _inside(root, base / d, shown)
            _check(real, f"{relative.rstrip('/')}/{shown}", reserved, "imports")
            if real in visited:  # a link cycle, or a folder reached twice
                dirs.remove(d)
            visited.add(real)
        dirs.sort()
        for name in sorted(names):
            found = base / name
            shown = found.relative_to(root / relative).as_posix()
            real = _inside(root, found, shown)
            _check(real, f"{relative.rstrip('/')}/{shown}", reserved, "imports")
            if real.is_file():
                files[shown] = real
    if not files:
        raise OperationError(f"folder {relative!r} holds no files")
    return files


def locate(root: Path, relative: str, reserved: Iterable[Reserved] = ()) -> Path:
    """The file or folder at `relative` under `root` (resolved), refused when it is absolute, leads outside the
    root, lies in a reserved folder or does not exist. Messages name the path as given, never the root's."""
    if not root.is_dir():
        raise OperationError(
            "the server's data root (CONSTELLATION_DATA_ROOT) does not exist on the server; its "
            "operator has to create it"
        )
    if Path(relative).is_absolute():
        raise OperationError(f"path {relative!r} must be relative to the data root, not absolute")
    if "\x00" in relative:  # no file system takes one; os.stat would raise ValueError
        raise OperationError(f"path {relative!r} holds a NUL character; refused")
    try:
        target = _inside(root, root / relative, relative)
        _check(target, relative, reserved, "imports")
        exists = target.exists()
    except OSError as exc:  # a name longer than the file system takes (ENAMETOOLONG), ...
        raise OperationError(f"path {relative!r} cannot be read on this server: {exc.strerror}") from None
    if not exists:
        raise OperationError(f"path {relative!r} does not exist under the data root")
    return target


def preflight(check: Preflight, params: Mapping[str, Any]) -> Iterator[Finding]:
    """import_from_local before launch: its path is relative, stays under the data root (links too), avoids the
    folders where runs are kept and exists. What a folder holds is read when the run imports it."""
    from orchestrator.preflight import Finding

    workspace = check.resources.workspace
    try:
        locate(Path(workspace.data_root).resolve(), params["path"], reserved_folders(workspace.artifact_root))
    except OperationError as refused:
        yield Finding("path", str(refused))


def export_files(
    refs: list[FileRef], target: Path, check_cancelled: Callable[[], None], reserved: Iterable[Reserved] = ()
) -> Exported:
    """Copy each file to target/<its name>; never replace a file already there, nor write in a `reserved` folder."""
    reserved = list(reserved)
    _check(target.resolve(), str(target), reserved, "exports")
    items = []
    for ref in refs:
        check_cancelled()
        destination = (target / ref.name).resolve()
        if not destination.is_relative_to(target):
            raise OperationError(f"{ref.name!r} would be written outside {target}; refused")
        _check(destination, str(destination), reserved, "exports")
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            with ref.path.open("rb") as source, destination.open("xb") as sink:
                shutil.copyfileobj(source, sink, 1 << 20)
        except FileExistsError:
            raise OperationError(f"{destination} already exists; exports never overwrite") from None
        items.append({"name": ref.name, "uri": destination.as_uri()})
    return Exported(target.as_uri(), items)


def _inside(root: Path, path: Path, shown: str) -> Path:
    real = path.resolve()
    if not real.is_relative_to(root):
        kind = "a link that points" if path.is_symlink() else "a path that leads"
        raise OperationError(f"{shown!r} is {kind} outside the data root; refused")
    return real
