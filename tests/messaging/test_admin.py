"""The operators' admin for messages and dead letters, driven through Django's test client.

Dead letters are made by the real code path (`messages_mark_sent` then `messages_fail`), and
requeues are checked down to the Celery broker: kombu keeps each queue (high, default, low)
as a Redis list of that name in the test Redis database.
"""

from __future__ import annotations

import re

import pytest
from django.contrib.admin.models import CHANGE, LogEntry
from django.contrib.auth.models import Permission
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from apps.messaging import lifecycle, services
from apps.messaging.models import DeadLetter, DeliveryAttempt, Message, Outcome, Priority, Status
from tests.factories import MessageFactory, MobileUserFactory, SenderFactory

CHANGELIST = reverse("admin:messaging_message_changelist")
DEAD_LETTERS = reverse("admin:messaging_deadletter_changelist")
QUEUES = ("high", "default", "low")


def make_dead_letter(*, reason: str = "no ack after 7 attempts (30 s each)", **message_fields) -> DeadLetter:
    """Fail a message that was written to a socket, as the ack-timeout sweep does."""
    message_fields.setdefault("retry_count", 6)
    message = MessageFactory(status=Status.QUEUED, **message_fields)
    services.messages_mark_sent([message.pk])
    failed = services.messages_fail(
        Message.objects.filter(pk=message.pk), reason=reason, attempt_outcome=Outcome.TIMEOUT
    )
    assert failed == [message.pk]
    return DeadLetter.objects.get(message=message)


def stale_dead_letter(*, to: str) -> DeadLetter:
    """Return a dead letter whose message has meanwhile moved on to `to` by another path."""
    dead_letter = make_dead_letter()
    assert lifecycle.transition_one(dead_letter.message_id, to=Status.QUEUED)
    assert lifecycle.transition_one(dead_letter.message_id, to=to)
    return dead_letter


def post_action(client: Client, action: str, ids: list[int], **extra: str):
    data = {"action": action, "_selected_action": [str(pk) for pk in ids], "index": "0", **extra}
    return client.post(DEAD_LETTERS, data, follow=True)


def shown_messages(response) -> list[str]:
    return [str(m) for m in response.context["messages"]]


def rows(response) -> list:
    return list(response.context["cl"].result_list)


def queue_lengths(redis) -> dict[str, int]:
    return {name: redis.llen(name) for name in QUEUES}


def staff_client(*permissions: str) -> Client:
    user = SenderFactory(is_staff=True)
    perms = [Permission.objects.get(codename=codename) for codename in permissions]
    user.user_permissions.add(*perms)
    client = Client()
    client.force_login(user)
    return client


# --- Messages -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_admin_index_lists_messages_and_dead_letters(admin_client):
    response = admin_client.get(reverse("admin:index"))

    assert response.status_code == 200
    assert CHANGELIST.encode() in response.content
    assert DEAD_LETTERS.encode() in response.content


@pytest.mark.django_db
def test_message_changelist_shows_columns_and_filters_by_status_kind_and_priority(admin_client):
    wanted = MessageFactory(status=Status.PENDING, priority=Priority.HIGH)
    MessageFactory(status=Status.PENDING, priority=Priority.LOW)
    MessageFactory(status=Status.QUEUED, priority=Priority.HIGH)

    everything = admin_client.get(CHANGELIST)
    filtered = admin_client.get(
        CHANGELIST, {"status__exact": "pending", "priority__exact": "high", "kind__exact": "one_way"}
    )
    chat_only = admin_client.get(CHANGELIST, {"kind__exact": "chat"})

    assert everything.status_code == 200
    assert len(rows(everything)) == 3
    for header in ("Recipient phone", "Sender", "Kind", "Priority", "Status", "Seq", "Retry count"):
        assert header in everything.content.decode()
    assert wanted.recipient.phone_number in everything.content.decode()
    assert rows(filtered) == [wanted]
    assert rows(chat_only) == []


@pytest.mark.django_db
def test_message_search_finds_by_phone_in_any_spacing_by_part_of_phone_and_by_ids(admin_client):
    recipient = MobileUserFactory(phone_number="+14155550123")
    first = MessageFactory(recipient=recipient)
    second = MessageFactory(recipient=recipient)
    other = MessageFactory(recipient=MobileUserFactory(phone_number="+14155550999"))

    by_phone = admin_client.get(CHANGELIST, {"q": "+1 415 555 0123"})
    by_part = admin_client.get(CHANGELIST, {"q": "0123"})
    by_ids = admin_client.get(CHANGELIST, {"q": f"{second.pk} {other.pk}"})
    nothing = admin_client.get(CHANGELIST, {"q": "not-a-phone-or-id"})

    assert by_phone.status_code == 200
    assert set(rows(by_phone)) == {first, second}
    assert set(rows(by_part)) == {first, second}
    assert set(rows(by_ids)) == {second, other}
    assert rows(nothing) == []


@pytest.mark.django_db
def test_message_changelist_query_count_does_not_grow_with_rows(admin_client):
    MessageFactory.create_batch(2)
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(CHANGELIST).status_code == 200
    # Each with its own sender and recipient: an N+1 would show up as extra queries.
    MessageFactory.create_batch(8)
    with CaptureQueriesContext(connection) as many:
        assert admin_client.get(CHANGELIST).status_code == 200

    assert len(many) == len(few)


@pytest.mark.django_db
def test_message_change_page_shows_attempts_and_offers_no_editable_field(admin_client):
    dead_letter = make_dead_letter()
    message = dead_letter.message
    url = reverse("admin:messaging_message_change", args=[message.pk])

    response = admin_client.get(url)

    assert response.status_code == 200
    html = response.content.decode()
    assert "View message" in html
    # No form field at all for the message: in particular none named status.
    assert response.context["adminform"].form.fields == {}
    assert not re.search(r'<(select|input|textarea)[^>]*name="status"', html)
    assert 'name="_save"' not in html
    # The attempt recorded when it was written, closed as a timeout when it failed.
    attempts = response.context["inline_admin_formsets"][0]
    assert [form.original for form in attempts] == list(message.attempts.all())
    assert "Timeout" in html
    assert reverse("admin:messaging_deadletter_change", args=[dead_letter.pk]) in html


@pytest.mark.django_db
def test_message_change_post_is_refused_and_status_unchanged(admin_client):
    message = make_dead_letter().message
    url = reverse("admin:messaging_message_change", args=[message.pk])

    response = admin_client.post(url, {"status": Status.DELIVERED, "retry_count": "0", "content": "edited"})

    assert response.status_code == 403
    message.refresh_from_db()
    assert (message.status, message.retry_count) == (Status.FAILED, 6)
    assert message.content != "edited"


@pytest.mark.django_db
def test_messages_cannot_be_added_or_deleted_in_the_admin(admin_client):
    message = MessageFactory()

    add = admin_client.get(reverse("admin:messaging_message_add"))
    delete = admin_client.post(reverse("admin:messaging_message_delete", args=[message.pk]), {"post": "yes"})
    listing = admin_client.get(CHANGELIST)

    assert add.status_code == 403
    assert delete.status_code == 403
    assert Message.objects.filter(pk=message.pk).exists()
    assert listing.context["action_form"] is None  # no action at all, not even delete


# --- Dead letters: pages ----------------------------------------------------------------------


@pytest.mark.django_db
def test_dead_letter_changelist_shows_message_phone_reason_and_retries(admin_client):
    dead_letter = make_dead_letter(reason="permanent: content rejected")
    make_dead_letter(recipient=MobileUserFactory(phone_number="+14155550777"))

    response = admin_client.get(DEAD_LETTERS)
    searched = admin_client.get(DEAD_LETTERS, {"q": dead_letter.message.recipient.phone_number})
    by_id = admin_client.get(DEAD_LETTERS, {"q": str(dead_letter.message_id)})

    assert response.status_code == 200
    html = response.content.decode()
    for text in (
        str(dead_letter.message_id),
        dead_letter.message.recipient.phone_number,
        "permanent: content rejected",
        "Retries",
        "Message status",
    ):
        assert text in html
    assert len(rows(response)) == 2
    assert rows(searched) == [dead_letter]
    assert rows(by_id) == [dead_letter]


@pytest.mark.django_db
def test_dead_letter_changelist_query_count_does_not_grow_with_rows(admin_client):
    make_dead_letter()
    with CaptureQueriesContext(connection) as few:
        assert admin_client.get(DEAD_LETTERS).status_code == 200
    for _ in range(5):
        make_dead_letter()
    with CaptureQueriesContext(connection) as many:
        assert admin_client.get(DEAD_LETTERS).status_code == 200

    assert len(many) == len(few)


@pytest.mark.django_db
def test_dead_letter_page_shows_reason_attempt_history_escaped_payload_and_buttons(admin_client):
    dead_letter = make_dead_letter(content="<script>alert(1)</script>", subject="Order 42")
    url = reverse("admin:messaging_deadletter_change", args=[dead_letter.pk])

    response = admin_client.get(url)

    assert response.status_code == 200
    html = response.content.decode()
    assert dead_letter.reason in html
    # Attempt history: one websocket attempt that timed out.
    history = re.search(r'<table class="attempt-history">.*?</table>', html, re.S).group(0)
    assert history.count("<tr>") == 2  # header + one attempt
    assert "<td>Websocket</td><td>Timeout</td>" in history
    # The payload is pretty JSON, and the content it carries is escaped, never markup.
    assert "&quot;subject&quot;: &quot;Order 42&quot;" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<script>alert(1)</script>" not in html
    # Single-object actions: a POST form to requeue, the standard delete link.
    requeue_url = reverse("admin:messaging_deadletter_requeue", args=[dead_letter.pk])
    assert f'action="{requeue_url}"' in html
    assert reverse("admin:messaging_deadletter_delete", args=[dead_letter.pk]) in html
    assert response.context["adminform"].form.fields == {}


@pytest.mark.django_db
def test_dead_letters_cannot_be_added_or_edited(admin_client):
    dead_letter = make_dead_letter(reason="original reason")

    add = admin_client.get(reverse("admin:messaging_deadletter_add"))
    edit = admin_client.post(
        reverse("admin:messaging_deadletter_change", args=[dead_letter.pk]), {"reason": "rewritten"}
    )

    assert (add.status_code, edit.status_code) == (403, 403)
    dead_letter.refresh_from_db()
    assert dead_letter.reason == "original reason"
    assert DeadLetter.objects.count() == 1


# --- Dead letters: requeue ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_bulk_requeue_queues_messages_resets_retries_removes_dead_letters_and_publishes(
    admin_client, admin_user, redis
):
    urgent = make_dead_letter(priority=Priority.HIGH)
    normal = make_dead_letter(priority=Priority.NORMAL)
    untouched = make_dead_letter(priority=Priority.LOW)
    attempts_before = DeliveryAttempt.objects.count()

    response = post_action(admin_client, "requeue_selected", [urgent.pk, normal.pk])

    assert response.status_code == 200
    assert shown_messages(response) == [
        "Requeued 2 messages: their retries were reset and they were dispatched."
    ]
    for dead_letter in (urgent, normal):
        message = Message.objects.get(pk=dead_letter.message_id)
        assert (message.status, message.retry_count) == (Status.QUEUED, 0)
        assert (message.failed_at, message.failure_reason) == (None, "")
        assert message.next_attempt_at is not None  # the queued sweep still covers it
    assert set(DeadLetter.objects.values_list("pk", flat=True)) == {untouched.pk}
    left = Message.objects.get(pk=untouched.message_id)
    assert (left.status, left.retry_count) == (Status.FAILED, 6)
    # One delivery task per requeued message, on the queue of its priority, none for the other.
    assert queue_lengths(redis) == {"high": 1, "default": 1, "low": 0}
    # History is kept, no message row is created, and the requeue is in the admin log.
    assert DeliveryAttempt.objects.count() == attempts_before
    assert Message.objects.count() == 3
    logged = LogEntry.objects.filter(user=admin_user, action_flag=CHANGE)
    assert {entry.object_id for entry in logged} == {str(urgent.message_id), str(normal.message_id)}


@pytest.mark.django_db(transaction=True)
def test_requeue_button_on_change_page_requeues_one_message(admin_client, redis):
    dead_letter = make_dead_letter()
    other = make_dead_letter()
    url = reverse("admin:messaging_deadletter_requeue", args=[dead_letter.pk])

    response = admin_client.post(url, follow=True)

    assert response.redirect_chain == [(DEAD_LETTERS, 302)]
    assert shown_messages(response) == ["Requeued 1 message: its retries were reset and it was dispatched."]
    message = Message.objects.get(pk=dead_letter.message_id)
    assert (message.status, message.retry_count) == (Status.QUEUED, 0)
    assert not DeadLetter.objects.filter(pk=dead_letter.pk).exists()
    assert Message.objects.get(pk=other.message_id).status == Status.FAILED
    assert DeadLetter.objects.filter(pk=other.pk).exists()
    assert queue_lengths(redis) == {"high": 0, "default": 1, "low": 0}


@pytest.mark.django_db
def test_requeue_url_refuses_get(admin_client):
    dead_letter = make_dead_letter()

    response = admin_client.get(reverse("admin:messaging_deadletter_requeue", args=[dead_letter.pk]))

    assert response.status_code == 405
    assert Message.objects.get(pk=dead_letter.message_id).status == Status.FAILED
    assert DeadLetter.objects.filter(pk=dead_letter.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_requeue_leaves_a_message_that_is_no_longer_failed_in_its_status(admin_client, redis):
    stale = stale_dead_letter(to=Status.DELIVERED)
    failed = make_dead_letter()

    bulk = post_action(admin_client, "requeue_selected", [stale.pk, failed.pk])
    single = admin_client.post(reverse("admin:messaging_deadletter_requeue", args=[stale.pk]), follow=True)

    assert shown_messages(bulk) == [
        "Requeued 1 message: its retries were reset and it was dispatched.",
        "1 dead letter was not requeued: its message is no longer failed.",
    ]
    assert Message.objects.get(pk=failed.message_id).status == Status.QUEUED
    # The single requeue goes back to the dead letter's page with a warning.
    assert single.redirect_chain == [(reverse("admin:messaging_deadletter_change", args=[stale.pk]), 302)]
    assert shown_messages(single) == ["1 dead letter was not requeued: its message is no longer failed."]
    message = Message.objects.get(pk=stale.message_id)
    assert (message.status, message.retry_count) == (Status.DELIVERED, 0)
    assert DeadLetter.objects.filter(pk=stale.pk).exists()
    assert queue_lengths(redis) == {"high": 0, "default": 1, "low": 0}


# --- Dead letters: delete -------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_bulk_delete_removes_dead_letters_and_leaves_messages_failed(admin_client, redis):
    doomed = [make_dead_letter(), make_dead_letter()]
    kept = make_dead_letter()
    attempts_before = DeliveryAttempt.objects.count()

    confirm = post_action(admin_client, "delete_selected", [d.pk for d in doomed])
    response = post_action(admin_client, "delete_selected", [d.pk for d in doomed], post="yes")

    assert confirm.status_code == 200
    assert "Are you sure" in confirm.content.decode()
    assert shown_messages(response) == ["Successfully deleted 2 dead letters."]
    assert list(DeadLetter.objects.values_list("pk", flat=True)) == [kept.pk]
    for dead_letter in doomed:
        message = Message.objects.get(pk=dead_letter.message_id)
        assert (message.status, message.retry_count) == (Status.FAILED, 6)
        assert message.failure_reason == dead_letter.reason
    assert DeliveryAttempt.objects.count() == attempts_before
    assert queue_lengths(redis) == {"high": 0, "default": 0, "low": 0}


@pytest.mark.django_db(transaction=True)
def test_delete_from_change_page_removes_one_dead_letter_and_leaves_message_failed(admin_client, redis):
    dead_letter = make_dead_letter()
    url = reverse("admin:messaging_deadletter_delete", args=[dead_letter.pk])

    confirm = admin_client.get(url)
    response = admin_client.post(url, {"post": "yes"}, follow=True)

    assert confirm.status_code == 200
    assert response.redirect_chain[-1][0] == DEAD_LETTERS
    assert not DeadLetter.objects.exists()
    message = Message.objects.get(pk=dead_letter.message_id)
    assert message.status == Status.FAILED
    assert message.attempts.filter(outcome=Outcome.TIMEOUT).count() == 1
    assert queue_lengths(redis) == {"high": 0, "default": 0, "low": 0}


# --- Dead letters: who may ------------------------------------------------------------------


@pytest.mark.django_db
def test_staff_without_manage_dead_letters_cannot_see_requeue_or_delete():
    dead_letter = make_dead_letter()
    # Even the model's own view/delete permissions do not open dead letters: the spec's
    # manage_dead_letters does.
    client = staff_client("view_message", "view_deadletter", "delete_deadletter")
    change = reverse("admin:messaging_deadletter_change", args=[dead_letter.pk])

    index = client.get(reverse("admin:index"))
    responses = [
        client.get(DEAD_LETTERS),
        client.get(change),
        client.post(reverse("admin:messaging_deadletter_requeue", args=[dead_letter.pk])),
        client.post(reverse("admin:messaging_deadletter_delete", args=[dead_letter.pk]), {"post": "yes"}),
        post_action(client, "requeue_selected", [dead_letter.pk]),
    ]

    assert index.status_code == 200
    assert DEAD_LETTERS not in index.content.decode()
    assert [r.status_code for r in responses] == [403] * 5
    assert DeadLetter.objects.filter(pk=dead_letter.pk).exists()
    assert Message.objects.get(pk=dead_letter.message_id).status == Status.FAILED
    # The message itself stays visible to whoever may view messages.
    assert (
        client.get(reverse("admin:messaging_message_change", args=[dead_letter.message_id])).status_code
        == 200
    )


@pytest.mark.django_db
def test_staff_with_manage_dead_letters_reviews_and_requeues(django_capture_on_commit_callbacks):
    dead_letter = make_dead_letter()
    client = staff_client("manage_dead_letters")

    index = client.get(reverse("admin:index"))
    listing = client.get(DEAD_LETTERS)
    page = client.get(reverse("admin:messaging_deadletter_change", args=[dead_letter.pk]))
    with django_capture_on_commit_callbacks() as callbacks:
        post_action(client, "requeue_selected", [dead_letter.pk])

    assert DEAD_LETTERS in index.content.decode()
    assert (listing.status_code, page.status_code) == (200, 200)
    assert rows(listing) == [dead_letter]
    assert Message.objects.get(pk=dead_letter.message_id).status == Status.QUEUED
    assert not DeadLetter.objects.exists()
    assert len(callbacks) == 1  # the relay wake-up, after commit


# --- Invariant ------------------------------------------------------------------------------


@pytest.mark.django_db
@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            st.sampled_from([Status.FAILED, Status.PENDING, Status.DELIVERED, Status.READ]), st.booleans()
        ),
        min_size=1,
        max_size=4,
    )
)
def test_requeue_moves_exactly_the_selected_failed_messages_and_nothing_else(admin_client, cases):
    dead_letters = [
        (make_dead_letter() if status == Status.FAILED else stale_dead_letter(to=status), status, selected)
        for status, selected in cases
    ]
    messages_before = Message.objects.count()

    selected_ids = [d.pk for d, _, selected in dead_letters if selected]
    if selected_ids:
        post_action(admin_client, "requeue_selected", selected_ids)

    for dead_letter, status, selected in dead_letters:
        message = Message.objects.get(pk=dead_letter.message_id)
        if selected and status == Status.FAILED:
            assert (message.status, message.retry_count) == (Status.QUEUED, 0)
            assert not DeadLetter.objects.filter(pk=dead_letter.pk).exists()
        else:
            assert message.status == status
            assert DeadLetter.objects.filter(pk=dead_letter.pk).exists()
    assert Message.objects.count() == messages_before
