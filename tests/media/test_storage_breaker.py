"""Storage breaker: while the store keeps failing, uploads are refused at once with 503."""

from __future__ import annotations

import pytest

from apps.common import breaker as breakers
from apps.media.models import Media

from .conftest import pdf_bytes, stored_files
from .test_upload import post


@pytest.fixture(autouse=True)
def _fresh_breakers():
    breakers._closed_until.clear()
    yield
    breakers._closed_until.clear()


def test_upload_is_refused_with_503_and_retry_after_while_the_storage_breaker_is_open(
    sender_client, media_root
):
    for _ in range(10):
        breakers.breaker(breakers.STORAGE).record(ok=False)

    response = post(sender_client, pdf_bytes(), "doc.pdf")

    assert response.status_code == 503
    assert int(response["Retry-After"]) >= 1
    assert Media.objects.count() == 0
    assert stored_files(media_root) == []


def test_successful_uploads_are_recorded_as_healthy_storage_calls(sender_client):
    for _ in range(4):
        breakers.breaker(breakers.STORAGE).record(ok=False)

    for _ in range(6):
        assert post(sender_client, pdf_bytes(), "doc.pdf").status_code == 201

    # 4 failures in the last 10 calls: still closed. One more failure pushes out the oldest
    # failure (still 4 of 10); only a fifth in the window would open it.
    assert breakers.breaker(breakers.STORAGE).state() == "closed"
    assert breakers.breaker(breakers.STORAGE).record(ok=False) == "closed"
