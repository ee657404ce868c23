"""The pre-launch checks' table names real operations and real functions.

A check that breaks at launch is logged and left to the run (a broken check must not stop launches), so an entry
naming a module or function that does not exist would let every pipeline through unchecked, silently."""

from __future__ import annotations

import importlib
import inspect

import pytest

from orchestrator.assets.repository import OP_DEFS
from orchestrator.preflight import CHECKS

OPERATIONS = {op.__name__ for op in OP_DEFS}


@pytest.mark.parametrize("operation", sorted(CHECKS))
def test_each_check_is_a_function_of_an_operation(operation: str):
    assert operation in OPERATIONS, f"{operation!r} has a check but is no operation"
    module, _, name = CHECKS[operation].partition(":")
    check = getattr(importlib.import_module(module), name, None)
    assert callable(check), f"{CHECKS[operation]!r} is not a function"
    assert list(inspect.signature(check).parameters)[:2] == ["check", "params"]
