"""Conversation services: start, send both ways, read, archive, close, and the unread counters.

Everything runs against the real services and PostgreSQL. Seq streams: a mobile user's chat
messages share its one stream with the one-way messages it receives; a business user's
incoming chat messages count in the business user's own stream (`User.last_seq`).
"""

from __future__ import annotations

import uuid
from functools import partial

import pytest

from apps.accounts.models import MobileUser, User
from apps.accounts.party import Party
from apps.conversations import services
from apps.conversations.errors import ConversationClosed, ConversationNotFound, OneWayNotAnswerable
from apps.conversations.models import Conversation, ConversationStatus
from apps.messaging import services as messaging
from apps.messaging.errors import RecipientNotFound
from apps.messaging.models import DeadLetter, Kind, Message, Priority, Status
from tests.concurrency import run_together
from tests.factories import ConversationFactory, MobileUserFactory, SenderFactory

ACTIVE, ARCHIVED, CLOSED = ConversationStatus.ACTIVE, ConversationStatus.ARCHIVED, ConversationStatus.CLOSED
UNKNOWN_PHONE = "+442071838750"


def send(conversation: Conversation, author, content: str = "hi") -> Message:
    return services.conversation_message_send(conversation_id=conversation.pk, author=author, content=content)


def one_way(sender, mobile, content: str = "notice") -> Message:
    return messaging.message_send(sender=sender, recipient_phone_number=mobile.phone_number, content=content)


def fresh(conversation: Conversation) -> Conversation:
    return Conversation.objects.get(pk=conversation.pk)


def counters(conversation: Conversation) -> tuple[int, int]:
    """Return (unread_business, unread_mobile) as stored."""
    c = fresh(conversation)
    return c.unread_business, c.unread_mobile


def last_seqs(business, mobile) -> tuple[int, int]:
    return (
        User.objects.values_list("last_seq", flat=True).get(pk=business.pk),
        MobileUser.objects.values_list("last_seq", flat=True).get(pk=mobile.pk),
    )


def snapshot(conversation: Conversation) -> tuple:
    """Return everything a refused write must leave as it was."""
    c = fresh(conversation)
    return (
        Message.objects.count(),
        last_seqs(c.business, c.mobile),
        c.status,
        c.unread_business,
        c.unread_mobile,
        c.last_message_id,
        c.last_message_at,
    )


# --- get or create ----------------------------------------------------------------------------


def test_get_or_create_creates_then_returns_the_same_open_conversation(sender, mobile_user):
    first, created = services.conversation_get_or_create(
        business=sender, mobile_phone_number=mobile_user.phone_number
    )
    again, created_again = services.conversation_get_or_create(
        business=sender, mobile_phone_number=mobile_user.phone_number
    )

    assert (created, created_again) == (True, False)
    assert again.pk == first.pk
    assert (first.business_id, first.mobile_id, first.status) == (sender.pk, mobile_user.pk, ACTIVE)
    assert (first.unread_business, first.unread_mobile, first.last_message_id) == (0, 0, None)
    assert Conversation.objects.count() == 1


def test_get_or_create_returns_an_archived_conversation_instead_of_opening_another(conversation):
    services.conversation_archive(conversation_id=conversation.pk, participant=conversation.business)

    found, created = services.conversation_get_or_create(
        business=conversation.business, mobile_phone_number=conversation.mobile.phone_number
    )

    assert not created
    assert found.pk == conversation.pk
    assert found.status == ARCHIVED
    assert Conversation.objects.count() == 1


def test_get_or_create_after_close_opens_a_new_conversation(conversation):
    services.conversation_close(conversation_id=conversation.pk, participant=conversation.mobile)

    new, created = services.conversation_get_or_create(
        business=conversation.business, mobile_phone_number=conversation.mobile.phone_number
    )

    assert created
    assert new.pk != conversation.pk
    assert fresh(conversation).status == CLOSED
    assert list(Conversation.objects.filter(status__in=(ACTIVE, ARCHIVED))) == [new]


def test_get_or_create_keeps_pairs_apart(sender, other_sender, mobile_user, stranger):
    pairs = [(sender, mobile_user), (sender, stranger), (other_sender, mobile_user)]

    made = [
        services.conversation_get_or_create(business=b, mobile_phone_number=m.phone_number) for b, m in pairs
    ]

    assert all(created for _, created in made)
    assert len({c.pk for c, _ in made}) == 3
    assert [(c.business_id, c.mobile_id) for c, _ in made] == [(b.pk, m.pk) for b, m in pairs]


def test_get_or_create_refuses_unknown_and_deactivated_mobile_users(sender, mobile_user):
    MobileUser.objects.filter(pk=mobile_user.pk).update(is_active=False)

    for phone in (UNKNOWN_PHONE, mobile_user.phone_number):
        with pytest.raises(RecipientNotFound):
            services.conversation_get_or_create(business=sender, mobile_phone_number=phone)

    assert not Conversation.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_get_or_create_makes_one_conversation():
    sender, mobile = SenderFactory(), MobileUserFactory()
    call = partial(
        services.conversation_get_or_create, business=sender, mobile_phone_number=mobile.phone_number
    )

    results = run_together(*[call] * 6)

    assert Conversation.objects.count() == 1
    assert {c.pk for c, _ in results} == {Conversation.objects.get().pk}
    assert sorted(created for _, created in results) == [False] * 5 + [True]


# --- sending ----------------------------------------------------------------------------------


def test_business_message_is_a_chat_message_in_the_mobile_users_shared_stream(conversation):
    business, mobile = conversation.business, conversation.mobile
    before = one_way(business, mobile)

    message = send(conversation, business, "hello")
    after = one_way(business, mobile)

    assert (before.seq, message.seq, after.seq) == (1, 2, 3)
    stored = Message.objects.get(pk=message.pk)
    assert (stored.kind, stored.conversation_id) == (Kind.CHAT, conversation.pk)
    assert (stored.sender_id, stored.sender_mobile_id) == (business.pk, None)
    assert (stored.recipient_id, stored.recipient_business_id) == (mobile.pk, None)
    assert (stored.status, stored.priority, stored.content) == (Status.QUEUED, Priority.HIGH, "hello")
    assert last_seqs(business, mobile) == (0, 3)  # nothing counted in the business's stream
    c = fresh(conversation)
    assert (c.last_message_id, c.last_message_at) == (stored.pk, stored.created_at)
    assert (c.unread_business, c.unread_mobile) == (0, 1)


def test_mobile_messages_count_in_the_business_users_own_stream_across_conversations(sender):
    first, second = ConversationFactory(business=sender), ConversationFactory(business=sender)
    one_way(sender, first.mobile)

    seqs = [
        send(first, first.mobile).seq,
        send(second, second.mobile).seq,
        send(first, first.mobile).seq,
    ]

    assert seqs == [1, 2, 3]
    stored = Message.objects.filter(kind=Kind.CHAT).order_by("seq")
    assert {(m.sender_mobile_id is not None, m.recipient_business_id) for m in stored} == {(True, sender.pk)}
    assert all(m.sender_id is None and m.recipient_id is None for m in stored)
    assert last_seqs(sender, first.mobile) == (3, 1)  # the mobile user's stream only has the one-way
    assert counters(first) == (2, 0)
    assert counters(second) == (1, 0)


def test_sending_into_an_archived_conversation_reactivates_it_from_either_side(conversation):
    for author in (conversation.business, conversation.mobile):
        services.conversation_archive(conversation_id=conversation.pk, participant=author)
        assert fresh(conversation).status == ARCHIVED

        message = send(conversation, author)

        c = fresh(conversation)
        assert c.status == ACTIVE
        assert c.last_message_id == message.pk


def test_sending_into_a_closed_conversation_is_refused_and_stores_nothing(conversation):
    send(conversation, conversation.business)
    send(conversation, conversation.mobile)
    services.conversation_close(conversation_id=conversation.pk, participant=conversation.business)
    before = snapshot(conversation)

    for author in (conversation.business, conversation.mobile):
        with pytest.raises(ConversationClosed):
            send(conversation, author)

    assert snapshot(conversation) == before


def test_answering_a_one_way_message_is_refused_as_not_answerable(sender, mobile_user):
    notice = one_way(sender, mobile_user)
    before = (Message.objects.count(), last_seqs(sender, mobile_user), Conversation.objects.count())

    with pytest.raises(OneWayNotAnswerable):
        services.conversation_message_send(conversation_id=notice.pk, author=mobile_user, content="reply")
    with pytest.raises(OneWayNotAnswerable):
        services.conversation_message_send(conversation_id=str(notice.pk), author=mobile_user, content="re")

    assert (Message.objects.count(), last_seqs(sender, mobile_user), Conversation.objects.count()) == before


def test_a_one_way_message_of_someone_else_is_just_not_found(sender, mobile_user, stranger):
    notice = one_way(sender, mobile_user)

    # Neither another mobile user nor the business learns anything about the id.
    for author in (stranger, sender):
        with pytest.raises(ConversationNotFound):
            services.conversation_message_send(conversation_id=notice.pk, author=author, content="x")

    assert Message.objects.count() == 1


def test_only_participants_can_send(conversation, other_sender, stranger):
    for outsider in (other_sender, stranger):
        with pytest.raises(ConversationNotFound):
            send(conversation, outsider)
    for bad_id in (uuid.uuid4(), "not-a-uuid", None):
        with pytest.raises(ConversationNotFound):
            services.conversation_message_send(
                conversation_id=bad_id, author=conversation.business, content="x"
            )

    assert not Message.objects.exists()
    assert counters(conversation) == (0, 0)


def test_sending_to_a_deactivated_mobile_user_is_refused_and_stores_nothing(conversation):
    send(conversation, conversation.business)
    MobileUser.objects.filter(pk=conversation.mobile.pk).update(is_active=False)
    before = snapshot(conversation)

    with pytest.raises(RecipientNotFound):
        send(conversation, conversation.business)

    assert snapshot(conversation) == before


def test_sending_to_a_deactivated_business_user_is_refused_and_stores_nothing(conversation):
    send(conversation, conversation.mobile)
    User.objects.filter(pk=conversation.business.pk).update(is_active=False)
    before = snapshot(conversation)

    with pytest.raises(RecipientNotFound):
        send(conversation, conversation.mobile)

    assert snapshot(conversation) == before


# --- reading ----------------------------------------------------------------------------------


def test_mark_read_reads_only_the_readers_messages_and_zeroes_its_counter(conversation):
    business, mobile = conversation.business, conversation.mobile
    to_mobile = [send(conversation, business) for _ in range(3)]
    to_business = [send(conversation, mobile) for _ in range(2)]
    messaging.messages_acknowledge(recipient=Party.mobile(mobile.pk), message_ids=[to_mobile[0].pk])

    read = services.conversation_mark_read(conversation_id=conversation.pk, reader=mobile)

    assert read == 3
    assert counters(conversation) == (2, 0)
    statuses = dict(Message.objects.values_list("pk", "status"))
    assert {statuses[m.pk] for m in to_mobile} == {Status.READ}
    assert {statuses[m.pk] for m in to_business} == {Status.QUEUED}
    assert services.conversation_mark_read(conversation_id=conversation.pk, reader=mobile) == 0
    assert counters(conversation) == (2, 0)


def test_mark_read_works_in_a_closed_conversation(conversation):
    send(conversation, conversation.mobile)
    services.conversation_close(conversation_id=conversation.pk, participant=conversation.mobile)

    assert services.conversation_mark_read(conversation_id=conversation.pk, reader=conversation.business) == 1
    assert counters(conversation) == (0, 0)


def test_mark_read_by_an_outsider_is_not_found_and_reads_nothing(conversation, other_sender, stranger):
    send(conversation, conversation.business)

    for outsider in (other_sender, stranger):
        with pytest.raises(ConversationNotFound):
            services.conversation_mark_read(conversation_id=conversation.pk, reader=outsider)

    assert Message.objects.get().status == Status.QUEUED
    assert counters(conversation) == (0, 1)


# --- unread counters through the message receipts ---------------------------------------------


def test_counters_follow_sends_and_per_message_reads_not_acks(conversation):
    business, mobile = conversation.business, conversation.mobile
    to_mobile = [send(conversation, business) for _ in range(3)]
    to_business = [send(conversation, mobile) for _ in range(2)]
    assert counters(conversation) == (2, 3)

    messaging.messages_acknowledge(recipient=Party.mobile(mobile.pk), message_ids=[m.pk for m in to_mobile])
    messaging.messages_acknowledge(recipient=Party.business(business.pk), message_ids=[to_business[0].pk])
    assert counters(conversation) == (2, 3)  # delivered is still unread

    messaging.messages_mark_read(
        recipient=Party.mobile(mobile.pk), message_ids=[to_mobile[0].pk, to_mobile[1].pk]
    )
    messaging.messages_mark_read(recipient=Party.business(business.pk), message_ids=[to_business[1].pk])
    assert counters(conversation) == (1, 1)

    # Reading again, or reading the other side's messages, changes nothing.
    messaging.messages_mark_read(recipient=Party.mobile(mobile.pk), message_ids=[to_mobile[0].pk])
    messaging.messages_mark_read(recipient=Party.business(business.pk), message_ids=[m.pk for m in to_mobile])
    assert counters(conversation) == (1, 1)
    assert Message.objects.get(pk=to_mobile[2].pk).status == Status.DELIVERED


def test_failed_chat_message_stays_unread_until_requeued_and_read(conversation):
    mobile = conversation.mobile
    message = send(conversation, conversation.business)
    messaging.messages_mark_sent([message.pk])

    messaging.messages_fail(Message.objects.filter(pk=message.pk), reason="no ack")
    assert counters(conversation) == (0, 1)
    messaging.dead_letters_requeue(dead_letters=DeadLetter.objects.filter(message=message))
    assert counters(conversation) == (0, 1)
    messaging.messages_mark_read(recipient=Party.mobile(mobile.pk), message_ids=[message.pk])

    assert counters(conversation) == (0, 0)
    assert Message.objects.get(pk=message.pk).status == Status.READ


def test_counters_are_per_conversation(sender, mobile_user):
    first = ConversationFactory(business=sender, mobile=mobile_user, status=CLOSED)
    second = ConversationFactory(business=sender, mobile=mobile_user)
    send(second, sender)
    message = send(second, sender)

    messaging.messages_mark_read(recipient=Party.mobile(mobile_user.pk), message_ids=[message.pk])

    assert counters(first) == (0, 0)
    assert counters(second) == (0, 1)


# --- archive and close ------------------------------------------------------------------------


def test_archive_is_idempotent_and_touches_nothing_else(conversation):
    send(conversation, conversation.business)
    archived = services.conversation_archive(conversation_id=conversation.pk, participant=conversation.mobile)
    first = fresh(conversation)

    again = services.conversation_archive(conversation_id=conversation.pk, participant=conversation.business)

    assert archived.status == again.status == ARCHIVED
    second = fresh(conversation)
    assert second.updated_at == first.updated_at  # the repeat wrote nothing
    assert (second.closed_at, second.unread_mobile, second.last_message_id) == (
        None,
        1,
        Message.objects.get().pk,
    )


def test_close_is_idempotent_and_keeps_the_first_closing_time(conversation):
    services.conversation_close(conversation_id=conversation.pk, participant=conversation.business)
    closed_at = fresh(conversation).closed_at

    again = services.conversation_close(conversation_id=conversation.pk, participant=conversation.mobile)

    assert again.status == CLOSED
    assert closed_at is not None
    assert fresh(conversation).closed_at == closed_at


def test_closing_an_archived_conversation_closes_it(conversation):
    services.conversation_archive(conversation_id=conversation.pk, participant=conversation.business)

    services.conversation_close(conversation_id=conversation.pk, participant=conversation.business)

    assert fresh(conversation).status == CLOSED


def test_archiving_a_closed_conversation_is_refused_and_it_stays_closed(conversation):
    services.conversation_close(conversation_id=conversation.pk, participant=conversation.business)
    before = fresh(conversation)

    with pytest.raises(ConversationClosed):
        services.conversation_archive(conversation_id=conversation.pk, participant=conversation.mobile)

    after = fresh(conversation)
    assert (after.status, after.closed_at, after.updated_at) == (CLOSED, before.closed_at, before.updated_at)


def test_outsiders_cannot_archive_or_close(conversation, other_sender, stranger):
    for outsider in (other_sender, stranger):
        for action in (services.conversation_archive, services.conversation_close):
            with pytest.raises(ConversationNotFound):
                action(conversation_id=conversation.pk, participant=outsider)

    assert fresh(conversation).status == ACTIVE


# --- races ------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_concurrent_sends_from_both_sides_keep_seqs_gapless_and_counters_exact(redis):
    conversation = ConversationFactory()
    business, mobile = conversation.business, conversation.mobile
    per_thread = 8

    def writer(author) -> None:
        for _ in range(per_thread):
            send(conversation, author)

    run_together(*(partial(writer, a) for a in (business, business, mobile, mobile)))

    to_mobile = Message.objects.filter(recipient=mobile).order_by("seq")
    to_business = Message.objects.filter(recipient_business=business).order_by("seq")
    assert list(to_mobile.values_list("seq", flat=True)) == list(range(1, 2 * per_thread + 1))
    assert list(to_business.values_list("seq", flat=True)) == list(range(1, 2 * per_thread + 1))
    assert counters(conversation) == (2 * per_thread, 2 * per_thread)
    newest = Message.objects.order_by("-created_at", "-pk").first()
    assert fresh(conversation).last_message_at == newest.created_at


@pytest.mark.django_db(transaction=True)
def test_a_send_racing_a_close_is_either_stored_before_it_or_refused(redis):
    for _ in range(5):
        conversation = ConversationFactory()

        def close(conversation=conversation):
            return services.conversation_close(
                conversation_id=conversation.pk, participant=conversation.mobile
            )

        def write(conversation=conversation):
            try:
                return send(conversation, conversation.business)
            except ConversationClosed:
                return None

        _, message = run_together(close, write)

        c = fresh(conversation)
        stored = list(Message.objects.filter(conversation=conversation))
        assert c.status == CLOSED
        assert stored == ([message] if message else [])
        if message:
            assert message.created_at <= c.closed_at
            assert c.unread_mobile == 1
        else:
            assert c.unread_mobile == 0
