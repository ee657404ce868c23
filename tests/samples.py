"""The request bodies of sample_dags.txt, as the README tells users to post them."""

from __future__ import annotations

import json
from pathlib import Path

SAMPLE_DAGS = Path(__file__).resolve().parent.parent / "sample_dags.txt"


def sample_bodies() -> list[str]:
    """Each body of sample_dags.txt (they are separated by blank lines)."""
    return [chunk.strip() for chunk in SAMPLE_DAGS.read_text().split("\n\n") if chunk.strip()]


def sample_instructions() -> list[list[dict]]:
    return [json.loads(body)["instructions"] for body in sample_bodies()]


def sample_with(*needles: str) -> dict:
    """The first sample body of sample_dags.txt that holds all these strings, parsed."""
    for body in sample_bodies():
        if all(n in body for n in needles):
            return json.loads(body)
    raise AssertionError(f"no sample holds {needles}")
