"""Through nginx (deploy/nginx/messaging.conf) in front of the real stack: send, then receive."""

from __future__ import annotations

import subprocess

import pytest

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
