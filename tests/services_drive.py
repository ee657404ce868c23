"""Test servers for this family of sources, and the stack settings that reach them."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def drive_env() -> dict[str, str]:
    """Settings for the stack; none until this family has a server."""
    return {}
