"""Patches of libraries' internals: each names the versions it was written for, and is in place."""

from __future__ import annotations

import inspect

import kombu
from kombu.transport import redis as redis_transport

from messaging_project import celery


def test_the_kombu_patch_targets_the_installed_kombu():
    # Re-read kombu's QoS.restore_unacked before widening KOMBU_TESTED.
    assert kombu.__version__.startswith(celery.KOMBU_TESTED), (kombu.__version__, celery.KOMBU_TESTED)


def test_the_kombu_patch_is_installed_and_wraps_the_original():
    patched = redis_transport.QoS.restore_unacked
    assert patched is celery._restore_unacked_tolerating_lost_connection
    original = inspect.signature(patched).parameters["_restore"].default
    assert original.__qualname__ == "QoS.restore_unacked"
    assert list(inspect.signature(original).parameters) == ["self", "client"]
