"""The shipped nginx config is valid for nginx (skipped where nginx is not installed)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "messaging.conf"
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None)


def nginx_conf(tmp_path: Path, include: Path = CONF) -> Path:
    """Write a main config that includes `include`, with every path under `tmp_path`."""
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"""
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


@pytest.mark.skipif(NGINX is None, reason="nginx absent (apt-get install nginx-light)")
def test_nginx_accepts_the_shipped_config(tmp_path):
    result = subprocess.run(
        [NGINX, "-t", "-p", str(tmp_path), "-c", str(nginx_conf(tmp_path))], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
