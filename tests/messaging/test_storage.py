"""Storage parameters the hot path relies on (PostgreSQL)."""

from __future__ import annotations

import pytest
from django.db import connection

pytestmark = pytest.mark.django_db


def test_delivery_attempt_pages_keep_room_for_hot_updates():
    # Closing an attempt (sent -> acked) changes no indexed column: with room on the page it is
    # a HOT update, with no index entries (migration 0006; a p3 run: 79 % HOT instead of 33 %).
    with connection.cursor() as cursor:
        cursor.execute("SELECT reloptions FROM pg_class WHERE relname = 'messaging_deliveryattempt'")
        (options,) = cursor.fetchone()
    assert "fillfactor=70" in (options or [])
