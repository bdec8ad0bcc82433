"""The machine's cache: what paris makes once per machine and reuses across runs (the adherence classifier, local
copies of a release read from an object store). $PARIS_CACHE, else ~/.cache/paris."""

from __future__ import annotations

import os


def machine_cache(*parts: str) -> str:
    return os.path.join(os.environ.get("PARIS_CACHE", os.path.expanduser("~/.cache/paris")), *parts)
