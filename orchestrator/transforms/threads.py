"""Work on a few threads, in order, a bounded number of items ahead: what the image and raster ops share."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

Item = TypeVar("Item")
Result = TypeVar("Result")


def map_in_order(
    work: Callable[[Item], Result], items: Iterable[Item], *, threads: int, ahead: int, name: str
) -> Generator[Result, None, None]:
    """`work` of each item, in the items' order, on `threads` threads with at most `ahead` items in flight
    (not one task per item queued up front). The first error is raised as its item's turn comes; the items
    not started yet are then dropped."""
    in_flight: deque[Future[Result]] = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix=name) as pool:
        try:
            for item in items:
                in_flight.append(pool.submit(work, item))
                if len(in_flight) >= ahead:
                    yield in_flight.popleft().result()
            while in_flight:
                yield in_flight.popleft().result()
        finally:
            for future in in_flight:
                future.cancel()
