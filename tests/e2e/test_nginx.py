"""Through nginx (deploy/nginx/messaging.conf) in front of the real stack: send, then receive; its
body size limits refuse a too-large upload before reading it, and let the largest bodies through."""

from __future__ import annotations

import socket
import subprocess

import pytest

from apps.media.sniffing import largest_limit
from apps.media.uploads import MULTIPART_OVERHEAD
from apps.messaging.models import Message
from tests.ops.test_nginx import CONF, NGINX, nginx_conf

from .harness import Api, free_port, wait_until

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(NGINX is None, reason="nginx absent (apt-get install nginx-light)"),
]


def _answers(url: str) -> bool:
    try:
        return Api(url).get("/health/live", timeout=2).status == 200
    except OSError:
        return False


@pytest.fixture
def nginx_url(stack, tmp_path):
    """Start nginx with the shipped config, its upstream the stack's web port; yield its URL."""
    port = free_port()
    site = tmp_path / "messaging.conf"
    site.write_text(
        CONF.read_text()
        .replace("server 127.0.0.1:8000;", f"server 127.0.0.1:{stack.web_port};")
        .replace("listen 8080;", f"listen 127.0.0.1:{port};")
    )
    proc = subprocess.Popen(
        [NGINX, "-p", str(tmp_path), "-c", str(nginx_conf(tmp_path, site))],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: _answers(url), timeout=10, what="nginx to answer")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_message_sent_through_nginx_arrives_on_a_socket_through_nginx(e2e, nginx_url):
    sender, mobile = e2e.sender(), e2e.mobile()
    socket = e2e.connect(mobile, url=nginx_url.replace("http://", "ws://") + "/ws/mobile/")

    response = Api(nginx_url, sender.token).post(
        "/api/v1/messages/", {"recipient_phone_number": mobile.user.phone_number, "content": "via nginx"}
    )

    assert response.status == 202, response
    [frame] = socket.wait_for(lambda s: s.messages(), timeout=15, what="the message through nginx")
    assert (frame["id"], frame["content"]) == (response.body["id"], "via nginx")
    # The socket's ack came back through nginx too; waiting for it also lets the stack finish
    # writing before the tables are truncated.
    e2e.wait_status(sender, [frame["id"]], "delivered")


def _http_requests_seen_by_the_app(stack) -> float:
    """Return the requests the web processes counted, /metrics scrapes left out (read directly)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = Api(stack.base_url).get("/metrics").body
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name == "messaging_http_requests"
        for sample in family.samples
        if sample.name.endswith("_total") and sample.labels["view"] != "metrics"
    )


def test_an_upload_over_the_limit_is_refused_by_nginx_before_its_body_is_read(e2e, nginx_url):
    sender = e2e.sender()
    seen_before = _http_requests_seen_by_the_app(e2e.stack)
    host, port = nginx_url.removeprefix("http://").split(":")

    # Announce one byte more than the app would read, send only the headers and 1 KB: nginx
    # answers from the Content-Length alone, without waiting for (or reading) the rest.
    with socket.create_connection((host, int(port)), timeout=10) as conn:
        conn.sendall(
            (
                "POST /api/v1/media/ HTTP/1.1\r\n"
                f"Host: {host}\r\nAuthorization: Token {sender.token}\r\n"
                "Content-Type: multipart/form-data; boundary=x\r\n"
                f"Content-Length: {largest_limit() + MULTIPART_OVERHEAD + 1}\r\n\r\n"
            ).encode()
            + b"x" * 1024
        )
        answer = conn.recv(4096).decode(errors="replace")

    assert answer.startswith("HTTP/1.1 413"), answer[:200]
    assert "nginx" in answer  # nginx's own page, not the app's JSON
    assert _http_requests_seen_by_the_app(e2e.stack) == seen_before


def test_a_batch_larger_than_the_default_body_limit_reaches_the_app(e2e, nginx_url):
    sender, mobile = e2e.sender(), e2e.mobile()
    items = [{"recipient_phone_number": mobile.user.phone_number, "content": "c" * 3000} for _ in range(999)]
    items.append({"recipient_phone_number": "+14155559999", "content": "to nobody"})

    response = Api(nginx_url, sender.token).post("/api/v1/messages/batch/", {"messages": items})

    # 3 MB, over the default limit (2.5 MB): nginx let it through, the app read all of it.
    assert response.status == 400, response
    assert list(response.body["messages"]) == ["999"]
    assert not Message.objects.filter(sender=sender.user).exists()
