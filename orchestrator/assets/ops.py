"""The operations a pipeline can use. Each is declared by its signature alone.

Parameter types, `Field` constraints and descriptions, defaults, the return type and the
docstring's first line become the catalog, the validation and the docs. Keep each op thin:
the work lives in `orchestrator.data`, plain Python tested on its own.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from orchestrator.data import archives, images, local
from orchestrator.data.datasets import Batches, FileDict, FileList, as_refs
from orchestrator.data.url import download
from orchestrator.engine import RunContext

Pixels = Annotated[int, Field(ge=1, le=16384)]


def import_from_local(
    ctx: RunContext,
    path: Annotated[
        str,
        Field(
            min_length=1, max_length=4096, description="a file or folder, relative to the server's data root"
        ),
    ],
) -> FileDict:
    """Read a file, or every file in a folder, from the server's data root."""
    return FileDict(local.find_local_files(ctx.resources.workspace.data_path, path))


def import_from_url(
    ctx: RunContext,
    url: Annotated[str, Field(min_length=1, max_length=8192, description="an http(s) URL of one file")],
    unpack: Annotated[bool, Field(description="unpack a zip or tar into its files")] = True,
) -> FileDict:
    """Download one file over HTTP(S) into the run's folder (public addresses only)."""
    workspace = ctx.resources.workspace
    target = download(url, ctx.node_dir, workspace.url_policy(), ctx.check_cancelled)
    if unpack:
        return FileDict(archives.expand(target, workspace.archive_limits()))
    return FileDict({target.name: target})


def dict_to_list(
    ctx: RunContext,
    data: Annotated[FileDict, Field(description="the files of an import")],
) -> FileList:
    """Turn an import's files into a list ordered by name."""
    return FileList(data.refs())


def resize_image(
    ctx: RunContext,
    data: Annotated[FileList | FileDict, Field(description="the images to resize")],
    width: Annotated[Pixels, Field(description="target width in pixels")],
    height: Annotated[Pixels, Field(description="target height in pixels")],
) -> FileList:
    """Resize every image to width × height pixels, keeping its format and order."""

    def resize(ref, out):
        ctx.check_cancelled()
        return images.resize_one(ref, out, width, height)

    resized = images.map_images(as_refs(data), ctx.node_dir, resize)
    return FileList(resized)


def batch_formatted_data(
    ctx: RunContext,
    data: Annotated[FileList | FileDict, Field(description="the files to batch")],
    batch_size: Annotated[int, Field(ge=1, le=100_000, description="files per batch")] = 32,
) -> Batches:
    """Cut files into consecutive batches of batch_size (the last may be smaller)."""
    refs = as_refs(data)
    return Batches([refs[i : i + batch_size] for i in range(0, len(refs), batch_size)])
