"""`make run` puts `constellation` on PATH: a link in ~/.local/bin when that folder is on PATH, else a hint.

`python -m constellation_cli.link` links this environment's `constellation` (beside its Python) as
~/.local/bin/constellation — the folder pip, pipx and uv use for commands — only when that folder
is on PATH and holds no other program by that name; a link to another checkout's `constellation`
is moved to this one. Otherwise it changes nothing and says how to call the command by name.
It never fails `make run`: the outcome is one line on stdout.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

NAME = "constellation"


def place(command: Path, path_env: str, home: Path) -> str:
    """Link `command` into ~/.local/bin when that is on `path_env` and free; the line that says what happened."""
    hint = (
        f"to call it by name: ln -s {command} ~/.local/bin/ (with ~/.local/bin on PATH), "
        f'or export PATH="{command.parent}:$PATH"'
    )
    if not command.exists():
        return f"{NAME}: {command} is missing; run make install"
    found = shutil.which(NAME, path=path_env)
    if found and Path(found).resolve() == command.resolve():
        return f"{NAME} is on PATH: {found}"
    local_bin = home / ".local" / "bin"
    link = local_bin / NAME
    if not any(_same(Path(d).expanduser(), local_bin) for d in path_env.split(os.pathsep) if d):
        return f"{NAME} is {command}; {hint}"
    if found and not _same(Path(found), link):
        return f"{NAME} on PATH is {found}, not this checkout's {command}; {hint}"
    someone_elses = Path(os.readlink(link)).name != NAME if link.is_symlink() else link.exists()
    if someone_elses:
        return f"{NAME} is {command}; {link} is another program, left alone; {hint}"
    was = f" (was {os.readlink(link)})" if link.is_symlink() else ""
    try:
        local_bin.mkdir(parents=True, exist_ok=True)
        temporary = link.with_name(f".{NAME}.{os.getpid()}")
        temporary.unlink(missing_ok=True)
        temporary.symlink_to(command)
        temporary.replace(link)  # atomic: the name never points nowhere
    except OSError as exc:
        return f"{NAME} is {command}; cannot link {link} ({exc.strerror}); {hint}"
    return f"{NAME} is on PATH: {link} -> {command}{was} (rm {link} to undo)"


def _same(a: Path, b: Path) -> bool:
    return os.path.realpath(a) == os.path.realpath(b)


def main() -> int:
    command = Path(sys.executable).parent / NAME  # this environment's entry point, e.g. .venv/bin/constellation
    sys.stdout.write(place(command.absolute(), os.environ.get("PATH", ""), Path.home()) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
