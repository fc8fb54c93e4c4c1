"""Ops fixtures: each test counts the backlog afresh (the scrape caches it for a second)."""

import pytest

from apps.ops.apis import BacklogCollector


@pytest.fixture(autouse=True)
def _fresh_backlog_counts():
    BacklogCollector._cached = None
    yield
    BacklogCollector._cached = None
