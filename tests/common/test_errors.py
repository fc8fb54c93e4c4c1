"""The domain error base: one code, status and retry-after, mapped once by the API and the sockets."""

from __future__ import annotations

import subprocess
import sys

from apps.common.errors import DomainError
from apps.messaging.flow import Overloaded, SendRateLimited
from tests.e2e.harness import REPO_ROOT


def test_domain_errors_import_no_rest_framework():
    code = (
        "import sys; import apps.common.errors, apps.media.errors, apps.messaging.errors,"
        " apps.conversations.errors; print('rest_framework' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "False"


def test_retry_after_is_whole_seconds_and_at_least_one():
    assert DomainError().retry_after_seconds is None
    assert DomainError(retry_after=0.2).retry_after_seconds == 1
    assert DomainError(retry_after=2.01).retry_after_seconds == 3
    assert Overloaded().retry_after_seconds == 5
    limited = SendRateLimited("Rate limit reached.", wait=1.5)
    assert (limited.status_code, limited.code, limited.retry_after_seconds) == (429, "rate_limited", 2)
    assert limited.detail == "Rate limit reached. Expected available in 2 seconds."
