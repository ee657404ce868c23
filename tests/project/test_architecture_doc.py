"""docs/architecture.md is what the code cites: every cited section exists, and nothing cites a file outside."""

from __future__ import annotations

import re
import subprocess

from harness import ROOT

DOC = ROOT / "docs" / "architecture.md"
CITATION = re.compile(r"docs/architecture\.md#([a-z0-9-]+)")


def anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"^#{1,6} +(.+?) *$", markdown, re.M)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def tracked_text() -> dict[str, str]:
    listed = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    texts = {}
    for name in listed.splitlines():
        if name.endswith((".py", ".md", ".toml", ".yml", ".yaml", ".txt", ".j2", "Makefile", "Dockerfile")):
            try:
                texts[name] = (ROOT / name).read_text()
            except (OSError, UnicodeDecodeError):  # listed but gone from the checkout, or not text
                continue
    return texts


def test_every_cited_section_of_the_architecture_exists():
    known = anchors(DOC.read_text())
    cited = {(name, anchor) for name, text in tracked_text().items() for anchor in CITATION.findall(text)}
    assert {"api/config.py", "model_server/__init__.py"} <= {name for name, _ in cited}
    assert [(name, anchor) for name, anchor in sorted(cited) if anchor not in known] == []


PAGE = re.compile(r"\b([A-Z][A-Z_]*\.md)\b")  # a document cited by name: README.md, RESULTS.md ...


def test_every_document_the_project_names_is_one_of_its_own():
    """A page cited by name is a file of this repository: the contract the code cites lives here."""
    texts = tracked_text()
    ours = {name.rsplit("/", 1)[-1] for name in texts}
    assert [(name, page) for name, text in texts.items() for page in set(PAGE.findall(text)) if page not in ours] == []
