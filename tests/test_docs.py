"""The README is a front page: short, with the measured verdict near the top, and every relative link in it and in
docs/*.md leads to a file that exists (and, where the link names a heading, to that heading)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
PAGES = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def prose(text: str) -> str:
    """The page without its fenced code blocks, where brackets are code, not links."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def anchors(text: str) -> set[str]:
    """GitHub's ids for the page's headings: lower case, punctuation dropped, spaces to hyphens."""
    found = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(text), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


def links() -> list[tuple[str, str]]:
    return [(page.name, target) for page in PAGES for target in LINK.findall(prose(page.read_text()))
            if not re.match(r"[a-z]+:", target)]  # http:, https:, mailto: are not checked


def test_the_readme_is_a_front_page_of_at_most_300_lines():
    assert len(README.read_text().splitlines()) <= 300


def test_the_verdict_table_starts_within_the_first_60_lines():
    lines = README.read_text().splitlines()
    heading = next(i for i, line in enumerate(lines) if line.startswith("## ") and "verdict" in line.lower())
    table = next(i for i, line in enumerate(lines) if i > heading and line.startswith("|"))
    assert table < 60, f"the verdict table starts on line {table + 1}"


def test_the_pages_have_links():
    assert len(links()) >= 30


@pytest.mark.parametrize("page, target", links())
def test_a_relative_link_leads_to_a_file_that_exists(page, target):
    source = README if page == README.name else ROOT / "docs" / page
    path, _, anchor = target.partition("#")
    file = (source.parent / path).resolve() if path else source
    assert file.is_file(), f"{page}: {target} leads to no file"
    if anchor and file.suffix == ".md":
        assert anchor in anchors(file.read_text()), f"{page}: {target}: {file.name} has no heading #{anchor}"


REPOSITORY_PATH = re.compile(r"\b(?:paris|tests|testkit|benchmarks)/[\w/]+\.(?:py|sh|html)\b")
TEST_NAME = re.compile(r"\btest_\w+\b(?!\.py)")


def test_every_file_the_pages_name_exists():
    named = {path for page in PAGES for path in REPOSITORY_PATH.findall(page.read_text())}
    assert len(named) >= 20
    assert not sorted(p for p in named if not (ROOT / p).is_file())


def test_every_test_the_pages_name_exists():
    """The promises point at the tests that keep them: a renamed or deleted test must not leave a dead name."""
    defined = {name for file in (ROOT / "tests").rglob("*.py") for name in re.findall(r"def (test_\w+)", file.read_text())}
    named = {name for page in PAGES for name in TEST_NAME.findall(page.read_text())}
    assert len(named) >= 10
    assert not sorted(named - defined)
