"""Retention: terminal messages older than MESSAGING_RETENTION_DAYS go, in chunks, and only they."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from apps.conversations.models import Conversation
from apps.conversations.services import conversation_message_send
from apps.media.models import Media
from apps.messaging import lifecycle, services
from apps.messaging.models import DeadLetter, DeliveryAttempt, Message, Outcome, Status
from apps.messaging.services import retention
from apps.privacy.tasks import purge_expired_messages
from messaging_project.settings.base import CELERY_BEAT_SCHEDULE
from tests.factories import ConversationFactory, MessageFactory

from .conftest import pdf_upload, stored_files


def aged(message: Message, days: float) -> Message:
    Message.objects.filter(pk=message.pk).update(created_at=timezone.now() - timedelta(days=days))
    return message


def terminal(status: str, *, days: float, **fields) -> Message:
    message = MessageFactory(status=Status.QUEUED, **fields)
    services.messages_mark_sent([message.pk])
    if status == Status.FAILED:
        services.messages_fail(
            Message.objects.filter(pk=message.pk), reason="no ack", attempt_outcome=Outcome.TIMEOUT
        )
    else:
        assert lifecycle.transition_one(message.pk, to=status)
    return aged(message, days)


@pytest.fixture
def settings_90(settings, db):
    settings.MESSAGING_RETENTION_DAYS = 90
    return settings


def test_purge_deletes_only_old_terminal_messages_with_attempts_dead_letters_and_media(
    settings_90, sender, media_root, django_capture_on_commit_callbacks
):
    media = pdf_upload(sender)
    old_read = terminal(Status.READ, days=91, sender=sender)
    Media.objects.filter(pk=media.pk).update(message=old_read)
    old_failed = terminal(Status.FAILED, days=100)
    DeliveryAttempt.objects.create(message=old_read, at=timezone.now(), channel="websocket", outcome="acked")
    recent_read = terminal(Status.READ, days=89)
    old_pending = aged(MessageFactory(status=Status.QUEUED), 200)
    old_delivered = terminal(Status.DELIVERED, days=200)
    assert DeadLetter.objects.filter(message=old_failed).exists()

    with django_capture_on_commit_callbacks(execute=True):
        assert retention.messages_purge_expired() == 2

    left = set(Message.objects.values_list("pk", flat=True))
    assert left == {recent_read.pk, old_pending.pk, old_delivered.pk}
    assert not DeliveryAttempt.objects.filter(message_id=old_read.pk).exists()
    assert not DeadLetter.objects.filter(message_id=old_failed.pk).exists()
    assert not Media.objects.filter(pk=media.pk).exists()
    assert stored_files(media_root) == []


def test_purge_works_in_chunks_and_a_second_run_finds_nothing(settings_90, monkeypatch):
    for _ in range(5):
        terminal(Status.READ, days=120)
    chunks = []
    original = retention.messages_purge_chunk

    def counting(**kwargs):
        chunks.append(original(**kwargs))
        return chunks[-1]

    monkeypatch.setattr(retention, "messages_purge_chunk", counting)

    assert retention.messages_purge_expired(chunk=2) == 5
    assert chunks == [2, 2, 1]
    assert retention.messages_purge_expired(chunk=2) == 0
    assert Message.objects.count() == 0


def test_purge_clears_a_conversations_last_message_pointer(settings_90, sender, mobile_user):
    conversation = ConversationFactory(business=sender, mobile=mobile_user)
    message = conversation_message_send(author=mobile_user, conversation_id=conversation.pk, content="old")
    assert lifecycle.transition_one(message.pk, to=Status.READ)
    aged(message, 365)

    assert retention.messages_purge_expired() == 1
    assert Conversation.objects.get(pk=conversation.pk).last_message_id is None


@pytest.mark.django_db(transaction=True)
def test_two_purges_at_once_share_the_work_and_delete_each_message_once(settings):
    settings.MESSAGING_RETENTION_DAYS = 90
    ids = {terminal(Status.READ, days=120).pk for _ in range(6)}
    cutoff = retention.retention_cutoff()
    results: list[int] = []
    claimed = threading.Event()
    release = threading.Event()

    def slow_purge():
        # Holds its claim (the first 3) until the other purge has run past it.
        from django.db import transaction

        with transaction.atomic():
            rows = list(
                Message.objects.filter(pk__in=ids)
                .order_by("created_at")
                .select_for_update(skip_locked=True)
                .values_list("pk", flat=True)[:3]
            )
            claimed.set()
            release.wait(10)
            Message.objects.filter(pk__in=rows).delete()
            results.append(len(rows))
        connection.close()

    thread = threading.Thread(target=slow_purge)
    thread.start()
    assert claimed.wait(10)
    results.append(retention.messages_purge_chunk(cutoff=cutoff, limit=10))
    release.set()
    thread.join(10)

    assert sorted(results) == [3, 3]
    assert not Message.objects.filter(pk__in=ids).exists()


def test_the_daily_job_is_scheduled_and_runs_the_purge(settings_90):
    entry = next(
        e for e in CELERY_BEAT_SCHEDULE.values() if e["task"] == "apps.privacy.tasks.purge_expired_messages"
    )
    assert entry["schedule"] == 24 * 3600
    terminal(Status.FAILED, days=91)
    assert purge_expired_messages.apply().get() == 1


def test_canceled_messages_are_purged_too(settings_90, sender, mobile_user):
    from apps.messaging.services import message_cancel

    message = services.message_send(
        sender=sender,
        recipient_phone_number=mobile_user.phone_number,
        content="withdrawn",
        send_at=timezone.now() + timedelta(hours=1),
    )
    assert message_cancel(sender=sender, message_id=message.pk).status == Status.CANCELED
    aged(message, 91)

    assert retention.messages_purge_expired() == 1
