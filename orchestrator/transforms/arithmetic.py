"""Arithmetic on a table's numbers: one operator of Python's `operator` module, named, with a constant.

The original Agentic Earth `math_block` looked the name up with `getattr(operator, name)`, which
also reaches `attrgetter`, `methodcaller`, `setitem`... Here only the arithmetic operators in
`OPERATORS` exist; any other name is refused with the list of those.

Numbers become floats, as they did in the original (pandas applied the operator with a float
constant to every cell); text, booleans, nulls and nested values are kept as they are. A result
that no float can hold (division by zero, overflow) fails naming the row and column, and `pow` is
bounded before it is computed.
"""

from __future__ import annotations

import json
import math
import operator
import sys
from collections.abc import Callable, Collection, Iterable
from pathlib import Path
from typing import Any, Literal, get_args

from orchestrator.datasets import Table
from orchestrator.engine import OperationError

OperatorName = Literal["add", "sub", "mul", "truediv", "floordiv", "mod", "pow"]

# ln of the largest float: a power whose ln is above it cannot be held in a float.
_LN_MAX = math.log(sys.float_info.max)
_CANCEL_EVERY = 1024  # rows between two checks for a cancelled run


def _power(base: float, exponent: float) -> float:
    """base ** exponent, refused before it is computed when no float can hold it."""
    if base == 0.0 and exponent < 0:
        raise ZeroDivisionError  # math.pow would say "math domain error"
    if base < 0 and not exponent.is_integer():
        raise ValueError("has no real result (a negative number to a fractional power)")
    if base != 0.0 and exponent * math.log(abs(base)) > _LN_MAX:
        digits = exponent * math.log10(abs(base))
        raise OverflowError(f"would be about 10^{digits:.4g}, beyond the largest float (about 1.8e308)")
    return math.pow(base, exponent)


OPERATORS: dict[str, Callable[[float, float], float]] = {
    "add": operator.add,
    "sub": operator.sub,
    "mul": operator.mul,
    "truediv": operator.truediv,
    "floordiv": operator.floordiv,
    "mod": operator.mod,
    "pow": _power,
}
assert set(OPERATORS) == set(get_args(OperatorName)), "the declared names and the functions differ"


def operator_named(name: str) -> Callable[[float, float], float]:
    """The function of an accepted operator name; any other name is refused with the accepted ones."""
    # Checked again at run time: a caller that skipped the catalog's validation gets no other function.
    if not isinstance(name, str) or name not in OPERATORS:
        shown = name if isinstance(name, str) else type(name).__name__
        raise OperationError(f"operand {shown[:60]!r} is not an arithmetic operator; use one of {', '.join(OPERATORS)}")
    return OPERATORS[name]


def is_number(value: Any) -> bool:
    """A JSON number (booleans are not numbers here, though Python counts them as ints)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def apply(value: Any, name: str, constant: float, where: str) -> Any:
    """`value <name> constant` as a float when value is a number; anything else as it is.

    `where` names the cell ("row 3, column 'x'") in the error of a result no float can hold.
    """
    if not is_number(value):
        return value
    function = operator_named(name)
    try:
        number = float(value)
    except OverflowError:
        # Not shown: Python refuses to write out an integer of more than 4300 digits.
        digits = int(abs(value).bit_length() * math.log10(2)) + 1
        raise OperationError(f"{where}: an integer of about {digits} digits is too large for a float") from None
    constant = float(constant)
    try:
        result = function(number, constant)
    except ZeroDivisionError:
        raise OperationError(f"{where}: {number!r} {name} {constant!r} divides by zero") from None
    except OverflowError as exc:
        reason = str(exc) if name == "pow" else "is beyond the largest float (about 1.8e308)"
        raise OperationError(f"{where}: {number!r} {name} {constant!r} {reason}") from None
    except ValueError as exc:
        raise OperationError(f"{where}: {number!r} {name} {constant!r} {exc}") from None
    if not math.isfinite(result):  # add, sub, mul and truediv overflow to inf instead of raising
        raise OperationError(
            f"{where}: {number!r} {name} {constant!r} gives {result}, beyond the largest float (about 1.8e308)"
        )
    return result


def compute(
    rows: Iterable[dict[str, Any]],
    columns: list[str],
    name: str,
    constant: float,
    out: Path,
    check_cancelled: Callable[[], None],
    only: Collection[str] | None = None,
    row_name: Callable[[int, dict[str, Any]], str] = lambda number, row: f"row {number}",
) -> Table:
    """Every row with `name constant` applied to its numbers (those of `only`'s columns, if given),
    streamed to `out` as JSON Lines."""
    operator_named(name)  # refuse an unknown name even when the table is empty
    count = 0
    with out.open("w") as sink:
        for number, row in enumerate(rows):
            if number % _CANCEL_EVERY == 0:
                check_cancelled()
            changed = {
                column: value
                if only is not None and column not in only
                else apply(value, name, constant, f"{row_name(number, row)}, column {column!r}")
                for column, value in row.items()
            }
            sink.write(json.dumps(changed, allow_nan=False) + "\n")
            count += 1
    return Table(out, columns, count)
