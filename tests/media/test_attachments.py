"""Attaching media to one-way messages: only the uploader's unattached media, at most 5, listed in
the message representation and the `message` frame with fresh URLs, without N+1 queries."""

from __future__ import annotations

import json
import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from apps.accounts.models import MobileUser
from apps.accounts.party import Party
from apps.media import tasks
from apps.media.models import Media, MediaStatus
from apps.messaging import services as messaging
from apps.messaging.errors import MediaNotFound
from apps.messaging.frames import message_payload
from apps.messaging.models import Message
from apps.messaging.selectors import undelivered_for_recipient
from tests.concurrency import run_together

from .conftest import image_bytes, pdf_bytes, sample, upload

ATTACHMENT_FIELDS = {
    "id",
    "media_type",
    "content_type",
    "file_name",
    "size",
    "url",
    "url_expires_at",
    "thumbnails",
}


def post_media(client, content: bytes, name: str = "f.bin") -> str:
    response = client.post("/api/v1/media/", {"file": upload(content, name)}, format="multipart")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def send(client, recipient, attachment_ids, **extra):
    return client.post(
        "/api/v1/messages/",
        {
            "recipient_phone_number": recipient.phone_number,
            "content": "see attached",
            "attachment_ids": attachment_ids,
        },
        format="json",
        **extra,
    )


def assert_nothing_sent(recipient, media_ids) -> None:
    assert not Message.objects.exists()
    assert MobileUser.objects.get(pk=recipient.pk).last_seq == 0  # no seq used up
    assert not Media.objects.filter(pk__in=media_ids, message__isnull=False).exists()


def test_send_lists_attachments_in_the_order_given(sender_client, mobile_user):
    document = post_media(sender_client, pdf_bytes(), "terms.pdf")
    image = post_media(sender_client, image_bytes("PNG"), "map.png")
    audio = post_media(sender_client, sample("sample.mp3"), "hello.mp3")

    response = send(sender_client, mobile_user, [image, document, audio])

    assert response.status_code == 202, response.content
    attachments = response.json()["attachments"]
    assert [a["id"] for a in attachments] == [image, document, audio]
    assert all(set(a) == ATTACHMENT_FIELDS for a in attachments)
    assert [a["media_type"] for a in attachments] == ["image", "document", "audio"]
    assert attachments[1]["file_name"] == "terms.pdf"
    message = Message.objects.get()
    assert set(Media.objects.filter(message=message).values_list("pk", flat=True)) == {
        uuid.UUID(i) for i in (image, document, audio)
    }
    shown = sender_client.get(f"/api/v1/messages/{message.pk}/").json()
    assert [a["id"] for a in shown["attachments"]] == [image, document, audio]


def test_frame_lists_attachments_and_thumbnails_once_ready(sender_client, sender, mobile_user):
    image = post_media(sender_client, image_bytes("JPEG", size=(1200, 900)), "shop.jpg")
    messaging.message_send(
        sender=sender, recipient_phone_number=mobile_user.phone_number, content="hi", attachment_ids=[image]
    )

    [processing] = message_payload(undelivered_for_recipient(recipient=Party.mobile(mobile_user.pk)).get())[
        "attachments"
    ]
    assert set(processing) == ATTACHMENT_FIELDS
    assert (processing["id"], processing["content_type"], processing["thumbnails"]) == (
        image,
        "image/jpeg",
        None,
    )
    assert processing["url"]

    tasks.make_thumbnails.apply(args=[image])
    [ready] = message_payload(undelivered_for_recipient(recipient=Party.mobile(mobile_user.pk)).get())[
        "attachments"
    ]
    assert set(ready["thumbnails"]) == {"small", "medium", "large"}
    assert len({ready["url"], *ready["thumbnails"].values()}) == 4


def test_catch_up_frames_carry_attachments(sender_client, sender, mobile_user):
    document = post_media(sender_client, pdf_bytes(), "a.pdf")
    messaging.message_send(
        sender=sender, recipient_phone_number=mobile_user.phone_number, content="x", attachment_ids=[document]
    )
    messaging.message_send(sender=sender, recipient_phone_number=mobile_user.phone_number, content="y")

    frames, _ = messaging.catchup_chunk(recipient=Party.mobile(mobile_user.pk), after_seq=0, limit=10)
    payloads = [json.loads(outgoing.frame)["message"] for outgoing in frames]

    assert [[a["id"] for a in p["attachments"]] for p in payloads] == [[document], []]


def test_sixth_attachment_is_refused(sender_client, mobile_user):
    ids = [post_media(sender_client, pdf_bytes()) for _ in range(6)]

    response = send(sender_client, mobile_user, ids)

    assert response.status_code == 400
    assert "attachment_ids" in response.json()
    assert_nothing_sent(mobile_user, ids)
    assert send(sender_client, mobile_user, ids[:5]).status_code == 202


def test_foreign_media_id_is_refused_and_nothing_is_stored(sender_client, other_sender_client, mobile_user):
    mine = post_media(sender_client, pdf_bytes())
    theirs = post_media(other_sender_client, pdf_bytes())

    response = send(sender_client, mobile_user, [mine, theirs])

    assert response.status_code == 404
    assert theirs in response.json()["detail"]
    assert mine not in response.json()["detail"]
    assert_nothing_sent(mobile_user, [mine, theirs])


def test_mobile_users_media_cannot_be_attached_by_a_sender(sender_client, mobile_client, mobile_user):
    theirs = post_media(mobile_client, pdf_bytes())

    assert send(sender_client, mobile_user, [theirs]).status_code == 404
    assert_nothing_sent(mobile_user, [theirs])


def test_unknown_media_id_is_refused(sender_client, mobile_user):
    assert send(sender_client, mobile_user, [str(uuid.uuid4())]).status_code == 404
    assert not Message.objects.exists()


def test_media_cannot_be_attached_twice(sender_client, mobile_user):
    media = post_media(sender_client, pdf_bytes())
    assert send(sender_client, mobile_user, [media]).status_code == 202
    first = Message.objects.get()

    response = send(sender_client, mobile_user, [media])

    assert response.status_code == 404
    assert Message.objects.count() == 1
    assert Media.objects.get(pk=media).message_id == first.pk


def test_duplicate_ids_are_refused(sender_client, mobile_user):
    media = post_media(sender_client, pdf_bytes())

    response = send(sender_client, mobile_user, [media, media])

    assert response.status_code == 400
    assert_nothing_sent(mobile_user, [media])


def test_failed_media_cannot_be_attached(sender_client, mobile_user):
    media = post_media(sender_client, image_bytes("PNG"))
    Media.objects.filter(pk=media).update(status=MediaStatus.FAILED, failure_reason="broken")

    response = send(sender_client, mobile_user, [media])

    assert response.status_code == 409
    assert_nothing_sent(mobile_user, [media])


def test_processing_image_is_attached_and_the_message_goes_at_once(
    sender_client, mobile_user, redis, django_capture_on_commit_callbacks
):
    media = post_media(sender_client, image_bytes("PNG"))
    assert Media.objects.get(pk=media).status == MediaStatus.PROCESSING

    with django_capture_on_commit_callbacks(execute=True):
        response = send(sender_client, mobile_user, [media])

    assert response.status_code == 202
    from tests.messaging.test_send import dispatched_ids

    # Its bytes are stored already: the delivery is dispatched without waiting for thumbnails.
    assert response.json()["id"] in dispatched_ids(redis)


def test_idempotent_replay_with_attachments_returns_the_original(sender_client, mobile_user):
    media = post_media(sender_client, pdf_bytes())

    first = send(sender_client, mobile_user, [media], HTTP_IDEMPOTENCY_KEY="order-42")
    replay = send(sender_client, mobile_user, [media], HTTP_IDEMPOTENCY_KEY="order-42")

    assert (first.status_code, replay.status_code) == (202, 200)
    assert replay.json()["id"] == first.json()["id"]
    assert [a["id"] for a in replay.json()["attachments"]] == [media]
    assert Message.objects.count() == 1


def test_failed_attach_frees_the_idempotency_key(sender_client, other_sender_client, mobile_user):
    theirs = post_media(other_sender_client, pdf_bytes())
    mine = post_media(sender_client, pdf_bytes())

    assert send(sender_client, mobile_user, [theirs], HTTP_IDEMPOTENCY_KEY="k").status_code == 404
    retried = send(sender_client, mobile_user, [mine], HTTP_IDEMPOTENCY_KEY="k")

    assert retried.status_code == 202
    assert [a["id"] for a in retried.json()["attachments"]] == [mine]


def test_frames_and_lists_need_no_query_per_message(sender_client, sender, mobile_user):
    def frames_queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            [message_payload(m) for m in undelivered_for_recipient(recipient=Party.mobile(mobile_user.pk))]
        return len(ctx.captured_queries)

    def list_queries() -> int:
        with CaptureQueriesContext(connection) as ctx:
            assert sender_client.get("/api/v1/messages/").status_code == 200
        return len(ctx.captured_queries)

    def send_with_media() -> None:
        media = post_media(sender_client, pdf_bytes())
        messaging.message_send(
            sender=sender,
            recipient_phone_number=mobile_user.phone_number,
            content="m",
            attachment_ids=[media],
        )

    for _ in range(2):
        send_with_media()
    frames_with_two, list_with_two = frames_queries(), list_queries()
    for _ in range(4):
        send_with_media()

    assert frames_queries() == frames_with_two == 2  # messages, then all their attachments
    assert list_queries() == list_with_two


@pytest.mark.django_db(transaction=True)
def test_concurrent_sends_cannot_attach_the_same_media_twice(sender_client, sender, mobile_user):
    media = post_media(sender_client, pdf_bytes())

    def attempt() -> str:
        try:
            messaging.message_send(
                sender=sender,
                recipient_phone_number=mobile_user.phone_number,
                content="race",
                attachment_ids=[media],
            )
        except MediaNotFound:
            return "refused"
        return "sent"

    outcomes = run_together(attempt, attempt)

    assert sorted(outcomes) == ["refused", "sent"]
    message = Message.objects.get()
    assert Media.objects.get(pk=media).message_id == message.pk
    assert MobileUser.objects.get(pk=mobile_user.pk).last_seq == 1  # the refused send left no gap
