"""Celery application: broker and queues from Django settings (CELERY_* names)."""

import gc
import logging
import os

from celery import Celery
from celery.signals import beat_init, task_postrun, task_prerun, worker_process_init, worker_process_shutdown
from kombu import Queue
from kombu.transport import redis as redis_transport

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "messaging_project.settings.local")

app = Celery("messaging_project")
app.config_from_object("django.conf:settings", namespace="CELERY")
# `webhooks` (apps/webhooks/tasks.py): after the message queues a sender is waiting on, before
# low-priority messages.
app.conf.task_queues = (Queue("high"), Queue("default"), Queue("webhooks"), Queue("low"))
app.autodiscover_tasks()


@task_prerun.connect
@task_postrun.connect
def _close_old_connections(sender=None, **_kwargs) -> None:
    """Treat each task as Django treats a request: drop connections that broke or expired.

    A healthy pooled connection goes back to the pool (CONN_MAX_AGE is 0 with a pool), so
    this costs no reconnect; see CELERY_DB_REUSE_MAX in the settings. A task run eagerly
    (`apply()`) runs inside its caller's connection and transaction, which stay untouched.
    """
    from django.db import close_old_connections

    if sender is not None and getattr(sender.request, "is_eager", False):
        return
    close_old_connections()


@beat_init.connect
def _start_outbox_relay(sender=None, **_kwargs) -> None:
    """Run the outbox relay inside beat: committed `queued` messages leave from there."""
    from apps.messaging.relay import relay_start

    relay_start()
    gc.freeze()  # as in a pool process, below


@worker_process_init.connect
def _freeze_startup_objects(**_kwargs) -> None:
    """Keep what a process loaded at start out of full garbage collections (see asgi.py)."""
    gc.freeze()


@worker_process_shutdown.connect
def _metrics_process_dead(**_kwargs) -> None:
    """Take a pool process's live gauges out of the host's sums as it exits (atexit may not run)."""
    from apps.common.multiproc import process_exit_mark

    process_exit_mark()


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


def _tolerating_lost_connection(settle):
    """Wrap QoS.ack or QoS.reject: skip the broker's bookkeeping when the channel's connection is gone.

    The same kombu 5.7 flaw as above, on the way out of a task: a task that was running when
    the broker connection was lost is acknowledged (or rejected, when its retry could not be
    published) on its old channel once the worker has reconnected; that channel has no
    connection, its pool cannot be rebuilt (AttributeError on `connection.client`), and the
    worker stopped consuming ("Unrecoverable error") for good, found by the Redis-restart fault
    test (tests/e2e/test_faults.py). The message stays in the broker's unacked index (restored
    after the visibility timeout) and the sweeps re-dispatch whatever it was for.
    """

    def settle_tolerating_lost_connection(self, delivery_tag, *args, **kwargs):
        try:
            return settle(self, delivery_tag, *args, **kwargs)
        except AttributeError as exc:
            if getattr(self.channel, "connection", None) is not None:
                raise
            logger.warning(
                "celery.settle_on_lost_connection_skipped",
                extra={"delivery_tag": str(delivery_tag), "error": repr(exc), "method": settle.__name__},
            )
            return None

    settle_tolerating_lost_connection.wrapped = settle
    return settle_tolerating_lost_connection


# The kombu versions whose QoS.restore_unacked, ack and reject this wraps (tests/ops/test_patches.py
# fails on others).
KOMBU_TESTED = ("5.7.",)
redis_transport.QoS.restore_unacked = _restore_unacked_tolerating_lost_connection
redis_transport.QoS.ack = _tolerating_lost_connection(redis_transport.QoS.ack)
redis_transport.QoS.reject = _tolerating_lost_connection(redis_transport.QoS.reject)
