"""The server's folders out of error messages: a path under one becomes its name relative to it.

The libraries that load models name the files they read ("Load model from /srv/models/land.onnx failed"),
and the clients of this server must not learn where it keeps them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path


def hide_folders(text: str, folders: Iterable[tuple[str | os.PathLike[str] | None, str]]) -> str:
    """`text` with each (folder, label): paths under the folder said relative to it, the folder alone as label."""
    forms: dict[str, str] = {}
    for folder, label in folders:
        if folder:
            given = os.path.abspath(os.fspath(folder))
            for form in (given, str(Path(given).resolve())):
                if form.rstrip(os.sep):
                    forms.setdefault(form.rstrip(os.sep), label)
    if not forms:
        return text
    # Deeper folders first; a folder ends at a separator or at the end of the path (not /srv/models2).
    alternatives = "|".join(re.escape(f) for f in sorted(forms, key=len, reverse=True))
    pattern = re.compile(f"(?:file://)?({alternatives})(?:({re.escape(os.sep)})+|(?![\\w.\\-]))")
    return pattern.sub(lambda m: "" if m.group(2) else forms[m.group(1)], text)


def hugging_face_cache() -> str | None:
    """Where huggingface_hub keeps downloaded models on this server (HF_HOME, HF_HUB_CACHE...)."""
    try:
        from huggingface_hub import constants
    except ImportError:  # a server without the transformers tasks
        return None
    return constants.HF_HUB_CACHE
