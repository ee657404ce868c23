"""Reading files from the server's data root, and nothing outside it."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

from orchestrator.datasets import Exported, FileRef
from orchestrator.engine import OperationError


def find_local_files(root: Path, relative: str) -> dict[str, Path]:
    """The regular files at `relative` (a file or a folder, recursively) under `root`.

    Links are allowed only when their target also lies under `root`.
    """
    root = root.resolve()
    if not root.is_dir():
        raise OperationError(f"the data root {root} does not exist on the server")
    if Path(relative).is_absolute():
        raise OperationError(f"path {relative!r} must be relative to the data root, not absolute")
    target = _inside(root, root / relative, relative)
    if not target.exists():
        raise OperationError(f"path {relative!r} does not exist under the data root")
    if target.is_file():
        return {Path(relative).name: target}
    files: dict[str, Path] = {}
    visited = {target}
    # Links are followed (when they stay inside the root), so a linked folder is not skipped.
    for folder, dirs, names in os.walk(root / relative, followlinks=True):
        base = Path(folder)
        for d in sorted(dirs):
            real = _inside(root, base / d, (base / d).relative_to(root / relative).as_posix())
            if real in visited:  # a link cycle, or a folder reached twice
                dirs.remove(d)
            visited.add(real)
        dirs.sort()
        for name in sorted(names):
            found = base / name
            shown = found.relative_to(root / relative).as_posix()
            real = _inside(root, found, shown)
            if real.is_file():
                files[shown] = real
    if not files:
        raise OperationError(f"folder {relative!r} holds no files")
    return files


def export_files(refs: list[FileRef], target: Path, check_cancelled: Callable[[], None]) -> Exported:
    """Copy each file to target/<its name>; never replace a file already there."""
    items = []
    for ref in refs:
        check_cancelled()
        destination = (target / ref.name).resolve()
        if not destination.is_relative_to(target):
            raise OperationError(f"{ref.name!r} would be written outside {target}; refused")
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
