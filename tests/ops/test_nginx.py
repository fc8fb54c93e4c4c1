"""The shipped nginx config: valid for nginx (skipped where nginx is not installed), and its body
size limits agree with what the application accepts."""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from apps.common.parsers import BULK_JSON_MAX_BYTES
from apps.media.sniffing import largest_limit
from apps.media.uploads import MULTIPART_OVERHEAD
from apps.messaging.content import MAX_CONTENT_LENGTH
from apps.messaging.services.batch import BATCH_MAX

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "messaging.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)
_UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3}


def nginx_conf(tmp_path: Path, include: Path = CONF) -> Path:
    """Write a main config that includes `include`, with every path under `tmp_path`."""
    conf = tmp_path / "nginx.conf"
    # Started by root, nginx runs its workers as `nobody`, who may not write a large request body
    # to its temporary file under tmp_path (a 500); they keep our user instead.
    user = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
    conf.write_text(
        f"""
{user}
pid {tmp_path}/nginx.pid;
daemon off;
error_log {tmp_path}/error.log;
events {{}}
http {{
    access_log {tmp_path}/access.log;
    client_body_temp_path {tmp_path}/body;
    proxy_temp_path {tmp_path}/proxy;
    fastcgi_temp_path {tmp_path}/fastcgi;
    uwsgi_temp_path {tmp_path}/uwsgi;
    scgi_temp_path {tmp_path}/scgi;
    include {include};
}}
"""
    )
    return conf


def body_limit(location: str | None = None) -> int:
    """Return client_max_body_size in bytes of the server (None) or of `location = <path>`."""
    text = re.sub(r"#.*", "", CONF.read_text())
    if location is not None:
        block = re.search(r"location\s*=\s*" + re.escape(location) + r"\s*\{([^}]*)\}", text)
        assert block, f"no `location = {location}` in {CONF.name}"
        text = block.group(1)
    else:
        text = re.sub(r"location[^{]*\{[^}]*\}", "", text)
    [value] = re.findall(r"client_max_body_size\s+(\d+)([kmg]?)\s*;", text, flags=re.I)
    return int(value[0]) * _UNITS[value[1].lower()]


def _phone(n: int) -> str:
    return f"+1415555{n % 10000:04d}".ljust(32)  # the longest the API takes


def test_the_upload_limit_is_what_the_app_accepts_and_not_a_byte_more():
    # The app reads an upload whose Content-Length is up to its largest media limit plus the
    # multipart framing (apps/media/uploads.py); nginx must let exactly those through.
    assert body_limit("/api/v1/media/") == largest_limit() + MULTIPART_OVERHEAD


def test_the_default_and_bulk_limits_are_what_the_app_reads(settings):
    assert body_limit() == settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    assert body_limit("/api/v1/messages/batch/") == BULK_JSON_MAX_BYTES
    assert body_limit("/api/v1/messages/broadcast/") == BULK_JSON_MAX_BYTES


def test_the_largest_valid_batch_and_broadcast_fit_their_limits_and_not_the_default():
    item = {
        "recipient_phone_number": _phone(0),
        "subject": "s" * 200,
        "content": "c" * MAX_CONTENT_LENGTH,
        "content_type": "text",
        "priority": "normal",
        "ttl_seconds": 86400,
        "send_at": "2026-12-31T23:59:59.999999+00:00",
        "attachment_ids": [str(uuid.uuid4()) for _ in range(5)],
    }
    batch = json.dumps({"messages": [item] * BATCH_MAX}).encode()
    content = {name: value for name, value in item.items() if name != "recipient_phone_number"}
    broadcast = json.dumps(
        {"recipient_phone_numbers": [_phone(n) for n in range(100_000)], **content}
    ).encode()

    assert len(batch) <= body_limit("/api/v1/messages/batch/")
    assert len(broadcast) <= body_limit("/api/v1/messages/broadcast/")
    # Without their own locations, nginx would refuse them with 413.
    assert len(batch) > body_limit() and len(broadcast) > body_limit()
    # A single send of the longest content fits the default with room to spare.
    assert len(json.dumps(item).encode()) * 10 < body_limit()


@pytest.mark.skipif(NGINX is None, reason="nginx absent (apt-get install nginx-light)")
def test_nginx_accepts_the_shipped_config(tmp_path):
    result = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(nginx_conf(tmp_path))], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
