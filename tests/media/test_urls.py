"""Signed download URLs: valid exactly 1 h on both backends; expired or tampered links refused."""

from __future__ import annotations

import time
import urllib.request
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import botocore.auth
import pytest
from django.utils.dateparse import parse_datetime
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from apps.media import storage
from apps.media.models import Media

from .conftest import image_bytes, pdf_bytes, upload

HOUR = timedelta(hours=1)
# Signing times from 2001 to 2100, in whole seconds (what both kinds of URL carry).
SIGNING_TIMES = st.integers(min_value=978_307_200, max_value=4_102_444_800)


def post(client, content: bytes, name: str = "f.bin"):
    response = client.post("/api/v1/media/", {"file": upload(content, name)}, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()


def fetch(client, url: str):
    """GET a media URL: the app's download view, or an S3 presigned URL over real HTTP."""
    if url.startswith("http"):
        with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(url, timeout=10) as resp:
            return resp.status, resp.read(), {k.lower(): v for k, v in resp.headers.items()}
    response = client.get(url)
    body = b"".join(response.streaming_content) if response.streaming else response.content
    return response.status_code, body, {k.lower(): v for k, v in response.headers.items()}


@pytest.fixture
def signing_clock(monkeypatch):
    """Set the clock django.core.signing reads (signing and checking tokens), in seconds."""
    clock = SimpleNamespace(now=time.time())
    monkeypatch.setattr("django.core.signing.time", SimpleNamespace(time=lambda: clock.now))
    return clock


# --- both backends ----------------------------------------------------------------------------


def test_url_downloads_the_exact_bytes_with_the_sniffed_type(sender_client, backend):
    content = pdf_bytes()
    body = post(sender_client, content, "report.png")

    status, downloaded, headers = fetch(sender_client, body["url"])

    assert status == 200
    assert downloaded == content
    assert headers["content-type"] == "application/pdf"


def test_url_expires_one_hour_after_it_is_signed(sender_client, backend):
    before = datetime.now(UTC).replace(microsecond=0)
    body = post(sender_client, image_bytes("PNG"))
    after = datetime.now(UTC)

    expires_at = parse_datetime(body["url_expires_at"])
    assert before + HOUR <= expires_at <= after + HOUR
    # What the response says is what the URL itself carries.
    assert expires_at == url_expiry(body["url"])


def test_get_signs_fresh_urls_each_time(sender_client, backend, signing_clock, monkeypatch):
    body = post(sender_client, pdf_bytes())
    signing_clock.now += 120
    later = datetime.now(UTC) + timedelta(seconds=120)
    monkeypatch.setattr(
        botocore.auth, "get_current_datetime", lambda remove_tzinfo=True: later.replace(tzinfo=None)
    )

    again = sender_client.get(f"/api/v1/media/{body['id']}/").json()

    assert again["url"] != body["url"]
    assert parse_datetime(again["url_expires_at"]) > parse_datetime(body["url_expires_at"])
    assert parse_datetime(again["url_expires_at"]) == url_expiry(again["url"])


def url_expiry(url: str) -> datetime:
    """Return when a media URL expires, read independently of the code under test."""
    if url.startswith("http"):
        query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
        signed = datetime.strptime(query["X-Amz-Date"], "%Y%m%dT%H%M%SZ").replace(tzinfo=UTC)
        return signed + timedelta(seconds=int(query["X-Amz-Expires"]))
    token = url.rstrip("/").rsplit("/", 1)[-1]
    _payload, stamp, _signature = token.rsplit(":", 2)
    digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    seconds = 0
    for ch in stamp:
        seconds = seconds * 62 + digits.index(ch)
    return datetime.fromtimestamp(seconds, tz=UTC) + HOUR


# --- filesystem backend: the app's signed links -----------------------------------------------


@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(signed_at=SIGNING_TIMES, offset=st.integers(min_value=-5, max_value=5))
def test_local_link_is_valid_for_exactly_one_hour(signing_clock, signed_at, offset):
    signing_clock.now = signed_at
    link = storage.signed_url("media/2030/01/x.png", content_type="image/png")
    assert link.expires_at == datetime.fromtimestamp(signed_at, tz=UTC) + HOUR

    token = link.url.rstrip("/").rsplit("/", 1)[-1]
    signing_clock.now = signed_at + 3600 + offset
    if offset <= 0:
        assert storage.download_for_token(token).key == "media/2030/01/x.png"
    else:
        with pytest.raises(storage.signing.SignatureExpired):
            storage.download_for_token(token)


def test_expired_link_is_refused_with_403(sender_client, signing_clock):
    body = post(sender_client, pdf_bytes())
    signing_clock.now += 3601

    response = sender_client.get(body["url"])

    assert response.status_code == 403
    assert response.json() == {"detail": "This download link has expired."}


def test_link_still_works_at_the_last_second_of_its_hour(sender_client, signing_clock):
    content = pdf_bytes()
    body = post(sender_client, content)
    signing_clock.now = url_expiry(body["url"]).timestamp()

    status, downloaded, _ = fetch(sender_client, body["url"])

    assert (status, downloaded) == (200, content)


@pytest.mark.parametrize(
    "tamper",
    [
        pytest.param(lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), id="signature"),
        pytest.param(lambda t: "e" + t[1:] if t[0] != "e" else "f" + t[1:], id="payload"),
        pytest.param(lambda t: "garbage", id="garbage"),
    ],
)
def test_tampered_link_is_refused_with_403(sender_client, tamper):
    body = post(sender_client, pdf_bytes())
    token = body["url"].rstrip("/").rsplit("/", 1)[-1]

    response = sender_client.get(f"/media/d/{tamper(token)}/")

    assert response.status_code == 403
    assert response.json() == {"detail": "This download link is not valid."}


def test_link_signed_with_another_salt_is_refused(sender_client):
    forged = storage.signing.dumps({"k": "media/x.png", "t": "text/html", "n": ""}, salt="other")

    assert sender_client.get(f"/media/d/{forged}/").status_code == 403


def test_download_is_never_rendered_as_a_page(sender_client):
    body = post(sender_client, image_bytes("PNG"), "x.html")

    response = sender_client.get(body["url"])

    assert response["Content-Type"] == "image/png"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert "sandbox" in response["Content-Security-Policy"]
    assert response["Content-Disposition"].startswith("inline")


def test_link_to_a_deleted_file_is_404(sender_client, django_capture_on_commit_callbacks):
    body = post(sender_client, pdf_bytes())
    with django_capture_on_commit_callbacks(execute=True):
        assert sender_client.delete(f"/api/v1/media/{body['id']}/").status_code == 204

    response = sender_client.get(body["url"])

    assert response.status_code == 404
    assert response.json()["detail"]


def test_links_use_the_configured_public_base_url(sender_client, settings):
    settings.MEDIA_DOWNLOAD_BASE_URL = "https://api.example.com/"

    body = post(sender_client, pdf_bytes())

    assert body["url"].startswith("https://api.example.com/media/d/")


# --- S3 backend: presigned URLs ---------------------------------------------------------------


@hypothesis_settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(signed_at=SIGNING_TIMES)
def test_presigned_url_is_valid_for_exactly_one_hour(s3, monkeypatch, signed_at):
    now = datetime.fromtimestamp(signed_at, tz=UTC).replace(tzinfo=None)
    monkeypatch.setattr(botocore.auth, "get_current_datetime", lambda remove_tzinfo=True: now)

    link = storage.signed_url("media/2030/01/x.png", content_type="image/png", file_name="x.png")

    query = parse_qs(urlsplit(link.url).query)
    assert query["X-Amz-Expires"] == ["3600"]
    assert query["X-Amz-Date"] == [now.strftime("%Y%m%dT%H%M%SZ")]
    assert link.expires_at == datetime.fromtimestamp(signed_at, tz=UTC) + HOUR
    assert query["response-content-type"] == ["image/png"]


def test_s3_object_is_stored_with_the_sniffed_type_not_the_clients(sender_client, s3):
    response = sender_client.post(
        "/api/v1/media/", {"file": upload(image_bytes("PNG"), "evil.html", "text/html")}, format="multipart"
    )

    media = Media.objects.get(pk=response.json()["id"])
    assert s3.get(media.storage_key)["ContentType"] == "image/png"
    assert s3.keys() == [media.storage_key]
