"""Server paths out of the messages users see: a path under a server folder becomes its name relative to it.

Operations name files as the user gave them, but the libraries they call do not (Pillow's "cannot identify
image file '/srv/data/docs/notes.png'"). Every failure message of a run passes through one redactor, which
knows the server's folders: `/srv/data/docs/notes.png` becomes `docs/notes.png`, and the folder itself its
label ("the data root").
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

Redactor = Callable[[str], str]


def redactor(folders: Iterable[tuple[str | os.PathLike[str] | None, str]]) -> Redactor:
    """A function that rewrites text naming any of `folders` (folder, label): what is under a folder is
    said relative to it, the folder alone by its label. Deeper folders win (a run's folder inside the
    artifact root inside the data root); each folder is also matched as its real path (links resolved)."""
    forms: dict[str, str] = {}
    for folder, label in folders:
        if not folder:
            continue
        given = os.path.abspath(os.fspath(folder))
        for form in (given, str(Path(given).resolve())):
            form = form.rstrip(os.sep)
            if form and form not in forms:  # the filesystem root would match every path
                forms[form] = label
    if not forms:
        return lambda text: text
    ordered = sorted(forms, key=len, reverse=True)
    # A folder, with its file:// form, then either a separator (what follows is relative to it) or the end
    # of the path (not a longer name that merely starts the same: /srv/data vs /srv/data2).
    pattern = re.compile(
        "(?:file://)?(" + "|".join(re.escape(f) for f in ordered) + r")(?:(" + re.escape(os.sep) + r")+|(?![\w.\-]))"
    )

    def redact(text: str) -> str:
        return pattern.sub(lambda m: "" if m.group(2) else forms[m.group(1)], text)

    return redact
