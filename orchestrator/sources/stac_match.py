"""A STAC search's criteria evaluated on items of a static catalog (an API evaluates them itself).

The criteria arrive normalized by pystac-client (`ItemSearch`), the same text an API receives:
datetime as "start/end" with ".." for an open end, query as {property: {operator: value}}.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from orchestrator.engine import OperationError

# The STAC API query extension's operators.
_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: a == b,
    "neq": lambda a, b: a != b,
    "lt": lambda a, b: a < b,
    "lte": lambda a, b: a <= b,
    "gt": lambda a, b: a > b,
    "gte": lambda a, b: a >= b,
    "startsWith": lambda a, b: isinstance(a, str) and a.startswith(b),
    "endsWith": lambda a, b: isinstance(a, str) and a.endswith(b),
    "contains": lambda a, b: isinstance(a, str) and b in a,
    "in": lambda a, b: a in b,
}


@dataclass(frozen=True)
class Criteria:
    """What an item must satisfy; None: no condition on that."""

    collections: frozenset[str] | None = None
    bbox: tuple[float, float, float, float] | None = None
    datetime: str | None = None  # "start/end", ".." for open, or one instant
    query: Mapping[str, Mapping[str, Any]] | None = None

    def __post_init__(self) -> None:
        for name, conditions in (self.query or {}).items():
            if not isinstance(conditions, Mapping):
                raise OperationError(f'query[{name!r}] must be an object of operators, e.g. {{"lt": 20}}')
            for op in conditions:
                if op not in _OPERATORS:
                    raise OperationError(
                        f"query[{name!r}] uses {op!r}, not an operator of the STAC query "
                        f"extension ({', '.join(_OPERATORS)})"
                    )

    def matches(self, item: Any) -> bool:
        """True when the pystac Item `item` meets every criterion."""
        if self.collections is not None and item.collection_id not in self.collections:
            return False
        if self.bbox is not None and not _intersects(self.bbox, item):
            return False
        if self.datetime is not None and not _in_interval(self.datetime, item):
            return False
        return all(_holds(item.properties, name, conditions) for name, conditions in (self.query or {}).items())


def _intersects(bbox: Sequence[float], item: Any) -> bool:
    from shapely.geometry import box, shape

    area = box(*bbox)
    if item.geometry:
        return area.intersects(shape(item.geometry))
    if item.bbox:
        return area.intersects(box(*item.bbox[:2], *item.bbox[-2:]))  # a 3D bbox: its 2D corners
    return False  # an item placed nowhere is not in any box


def _instant(text: str) -> datetime | None:
    if text in ("", ".."):
        return None
    value = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _in_interval(interval: str, item: Any) -> bool:
    start_text, _, end_text = interval.partition("/")
    start = _instant(start_text)
    end = _instant(end_text) if end_text else start  # one instant: the item must cover it
    props = item.properties
    if item.datetime is not None:
        first = last = item.datetime
    elif props.get("start_datetime") and props.get("end_datetime"):
        first, last = _instant(props["start_datetime"]), _instant(props["end_datetime"])
    else:
        return False
    first = first if first.tzinfo else first.replace(tzinfo=UTC)
    last = last if last.tzinfo else last.replace(tzinfo=UTC)
    return (end is None or first <= end) and (start is None or last >= start)


def _holds(properties: Mapping[str, Any], name: str, conditions: Mapping[str, Any]) -> bool:
    if name not in properties:
        return False
    value = properties[name]
    try:
        return all(_OPERATORS[op](value, operand) for op, operand in conditions.items())
    except TypeError:  # e.g. a text property compared with "lt" to a number: not a match
        return False
