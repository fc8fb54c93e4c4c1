"""Fixtures shared by the messaging tests."""

from __future__ import annotations

import pytest

from messaging_project.celery import app as celery_app

CLOSED_PORT_BROKER = "redis://127.0.0.1:1/0"


@pytest.fixture
def broker_down():
    """Point the Celery app at a closed port until the test ends; restore the real broker after.

    The producer and connection pools are cached on the app, so they are swapped out and put
    back rather than closed (closing them would break the rest of the session).
    """
    saved = (celery_app.conf.broker_url, celery_app._pool, celery_app.amqp._producer_pool)
    celery_app.conf.broker_url = CLOSED_PORT_BROKER
    celery_app._pool = None
    celery_app.amqp._producer_pool = None

    def restore() -> None:
        celery_app.conf.broker_url, celery_app._pool, celery_app.amqp._producer_pool = saved

    yield restore
    restore()
