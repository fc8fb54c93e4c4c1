"""Celery application: broker and queues from Django settings (CELERY_* names)."""

import logging
import os

from celery import Celery
from kombu import Queue
from kombu.transport import redis as redis_transport

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "messaging_project.settings.local")

app = Celery("messaging_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.task_queues = (Queue("high"), Queue("default"), Queue("low"))
app.autodiscover_tasks()

logger = logging.getLogger(__name__)


def _restore_unacked_tolerating_lost_connection(
    self, client=None, _restore=redis_transport.QoS.restore_unacked
):
    """Requeue unacked messages on close, unless the broker connection is already gone.

    When the broker connection is lost, kombu 5.7's Redis channel drops its connection pool and
    then, restoring unacked messages, cannot rebuild it (AttributeError on the closed
    connection's `hostname`): the worker exits ("Unrecoverable error") instead of reconnecting
    whenever it holds a reserved task or a retry's countdown. Those messages stay in the
    broker's unacked index (restored after the visibility timeout), and the sweeps re-dispatch
    whatever they were for.
    """
    try:
        return _restore(self, client)
    except AttributeError as exc:
        logger.warning(
            "celery.restore_unacked_skipped", extra={"count": len(self._delivered), "error": repr(exc)}
        )
        self._delivered.clear()
        return None


redis_transport.QoS.restore_unacked = _restore_unacked_tolerating_lost_connection
