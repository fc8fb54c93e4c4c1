"""End to end with media, through real daphne, Celery worker and beat: upload → thumbnails made by
the worker → send with attachments → the WebSocket frame carries URLs → the client downloads the
bytes and the thumbnails. Once on the filesystem backend (the app's signed links) and once on S3
(a moto server in this process, presigned URLs)."""

from __future__ import annotations

import io
import json
import socket
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator

import boto3
import pytest
from PIL import Image

from .conftest import E2E
from .harness import Api, Response, Stack

pytestmark = pytest.mark.e2e

S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
THUMBNAIL_SIZES = {"small": 150, "medium": 300, "large": 600}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="module", params=["filesystem", "s3"])
def media_stack(request, e2e_database_name, tmp_path_factory) -> Iterator[Stack]:
    """A stack whose processes store media on the given backend (never in the work tree)."""
    workdir = tmp_path_factory.mktemp(f"stack-{request.param}")
    stack = Stack(database_name=e2e_database_name, workdir=workdir)
    stack.env.update(STORAGE_BACKEND=request.param, MEDIA_ROOT=str(workdir / "media"))
    stack.env["MEDIA_DOWNLOAD_BASE_URL"] = stack.base_url
    if request.param == "s3":
        endpoint = request.getfixturevalue("s3_server")
        bucket = f"e2e-{uuid.uuid4().hex[:12]}"
        boto3.client(
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id=S3_KEYS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_KEYS["AWS_SECRET_ACCESS_KEY"],
        ).create_bucket(Bucket=bucket)
        stack.env.update(
            S3_KEYS,
            AWS_STORAGE_BUCKET_NAME=bucket,
            AWS_S3_ENDPOINT_URL=endpoint,
            AWS_S3_REGION_NAME="us-east-1",
        )
    try:
        stack.start()
    except BaseException:
        stack.close()
        raise
    yield stack
    stack.close()


@pytest.fixture
def stack(media_stack) -> Stack:
    return media_stack


def upload(api: Api, content: bytes, file_name: str) -> Response:
    """POST multipart/form-data to /api/v1/media/ (the harness's Api speaks JSON only)."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        api.base_url + "/api/v1/media/",
        data=body,
        method="POST",
        headers={
            "Authorization": f"Token {api.token}",
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Accept": "application/json",
        },
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=30) as resp:
            return Response(resp.status, json.loads(resp.read()), dict(resp.headers))
    except urllib.error.HTTPError as exc:
        return Response(exc.code, json.loads(exc.read() or b"null"), dict(exc.headers))


def download(url: str) -> tuple[int, bytes, str]:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=15) as resp:
            return resp.status, resp.read(), resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers.get("Content-Type", "")


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    image = Image.new("RGB", (width, height))
    image.putdata([(x % 256, y % 256, (x * y) % 256) for y in range(height) for x in range(width)])
    image.save(buffer, "PNG")
    return buffer.getvalue()


def pdf() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (20, 20), "white").save(buffer, "PDF")
    return buffer.getvalue()


def test_attachment_reaches_the_client_with_urls_that_download_bytes_and_thumbnails(e2e: E2E):
    sender, mobile = e2e.sender(), e2e.mobile()
    picture, document = png(1200, 600), pdf()

    image = upload(sender.api, picture, "storefront.jpg")  # a PNG whatever its name says
    assert image.status == 201, image.body
    assert (image.body["content_type"], image.body["status"]) == ("image/png", "processing")
    doc = upload(sender.api, document, "terms.pdf")
    assert doc.status == 201, doc.body
    assert doc.body["status"] == "ready"

    # The worker makes the thumbnails after the upload's commit.
    ready = e2e.stack.wait(
        lambda: (
            (r := sender.api.get(f"/api/v1/media/{image.body['id']}/")).body["status"] == "ready" and r.body
        ),
        timeout=30,
        what="the image's thumbnails",
    )
    assert set(ready["thumbnails"]) == set(THUMBNAIL_SIZES)

    socket = e2e.connect(mobile)
    accepted = e2e.send(
        sender, mobile, "Your order, with the invoice", attachment_ids=[image.body["id"], doc.body["id"]]
    )
    assert [a["id"] for a in accepted["attachments"]] == [image.body["id"], doc.body["id"]]

    [frame] = socket.wait_for(lambda s: s.messages(), timeout=20, what="the message frame")
    assert frame["id"] == accepted["id"]
    framed_image, framed_doc = frame["attachments"]
    assert (framed_image["id"], framed_image["media_type"], framed_image["file_name"]) == (
        image.body["id"],
        "image",
        "storefront.jpg",
    )
    assert (framed_doc["content_type"], framed_doc["size"]) == ("application/pdf", len(document))
    assert framed_doc["thumbnails"] is None

    assert download(framed_image["url"]) == (200, picture, "image/png")
    assert download(framed_doc["url"]) == (200, document, "application/pdf")
    for name, url in framed_image["thumbnails"].items():
        status, content, content_type = download(url)
        assert (status, content_type) == (200, "image/jpeg")
        with Image.open(io.BytesIO(content)) as thumb:
            side = THUMBNAIL_SIZES[name]
            assert thumb.size == (side, side // 2)  # 2:1 like the original

    e2e.wait_status(sender, [accepted["id"]], "delivered")
    # Attached media cannot be deleted; another user cannot even see it.
    assert sender.api.request("DELETE", f"/api/v1/media/{doc.body['id']}/").status == 409
    assert e2e.sender().api.get(f"/api/v1/media/{doc.body['id']}/").status == 404


def test_bad_uploads_and_foreign_attachments_are_refused_over_http(e2e: E2E):
    sender = e2e.sender()

    svg = b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"/>'
    refused = upload(sender.api, svg, "logo.png")
    assert refused.status == 400
    truncated = upload(sender.api, png(10, 10)[:40], "cut.png")
    assert truncated.status == 400

    foreign = upload(e2e.sender().api, pdf(), "theirs.pdf")
    response = sender.api.post(
        "/api/v1/messages/",
        {
            "recipient_phone_number": e2e.mobile().user.phone_number,
            "content": "not mine",
            "attachment_ids": [foreign.body["id"]],
        },
    )
    assert response.status == 404
