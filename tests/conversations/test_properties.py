"""Properties of chat, checked against the real services and PostgreSQL.

(a) kind consistency: a message is `chat` exactly when it belongs to a conversation, and the
    database refuses any row that breaks this;
(b) at most one open (active or archived) conversation per business user and mobile user,
    whatever sequence of get-or-create, archive and close ran, and the database refuses a second;
(c) unread accuracy: each side's counter equals its messages in the conversation that are not
    `read`, after every step of any interleaving of sends, receipts, timeouts, failures and
    requeues (and after threads did them concurrently);
(d) both sides can always write to an open conversation, whatever happened before.

Each example runs in a transaction that is rolled back, so examples do not see each other.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial

import pytest
from django.db import IntegrityError, transaction
from django.db.models import Count
from django.utils import timezone
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from apps.accounts.models import PartyKind
from apps.accounts.party import Party
from apps.conversations import services
from apps.conversations.errors import ConversationClosed
from apps.conversations.models import OPEN, Conversation, ConversationStatus
from apps.messaging import services as messaging
from apps.messaging.models import DeadLetter, Kind, Message, Status
from tests.concurrency import run_together
from tests.factories import ConversationFactory, MobileUserFactory, SenderFactory

ACTIVE, ARCHIVED, CLOSED = ConversationStatus.ACTIVE, ConversationStatus.ARCHIVED, ConversationStatus.CLOSED
BUSINESS, MOBILE = PartyKind.BUSINESS, PartyKind.MOBILE
SIDES = st.sampled_from([BUSINESS, MOBILE])
MAX_RETRIES = 2

property_settings = hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def refused(write) -> bool:
    """Return whether the database refuses `write` (run in a savepoint, so the test goes on)."""
    try:
        with transaction.atomic():
            write()
    except IntegrityError:
        return True
    return False


def send(conversation: Conversation, author, content: str = "hi") -> Message:
    return services.conversation_message_send(conversation_id=conversation.pk, author=author, content=content)


def author_of(conversation: Conversation, side: str):
    return conversation.business if side == BUSINESS else conversation.mobile


def inbox_of(conversation: Conversation, side: str) -> dict:
    """Return the filter of the conversation's messages addressed to `side`."""
    if side == BUSINESS:
        return {"recipient_business_id": conversation.business_id}
    return {"recipient_id": conversation.mobile_id}


def assert_counters_exact(conversations: list[Conversation], step: object = None) -> None:
    """Assert, for each conversation and side, counter == its messages there not yet read."""
    stored = {c.pk: c for c in Conversation.objects.filter(pk__in=[c.pk for c in conversations])}
    for conversation in conversations:
        for side, counter in ((BUSINESS, "unread_business"), (MOBILE, "unread_mobile")):
            unread = (
                Message.objects.filter(conversation=conversation, **inbox_of(conversation, side))
                .exclude(status=Status.READ)
                .count()
            )
            assert getattr(stored[conversation.pk], counter) == unread, (side, step)


# --- (a) kind consistency ---------------------------------------------------------------------


kind_operations = st.lists(
    st.one_of(
        st.tuples(st.just("one_way"), st.integers(min_value=0, max_value=1), st.none()),
        st.tuples(st.just("chat"), st.integers(min_value=0, max_value=1), SIDES),
        st.tuples(st.just("close_and_reopen"), st.integers(min_value=0, max_value=1), st.none()),
    ),
    min_size=3,
    max_size=25,
)


@property_settings
@given(ops=kind_operations)
def test_a_message_is_chat_exactly_when_it_belongs_to_a_conversation(ops, db):
    with transaction.atomic():
        business = SenderFactory()
        mobiles = [MobileUserFactory(), MobileUserFactory()]
        open_for = {
            i: services.conversation_get_or_create(business=business, mobile_phone_number=m.phone_number)[0]
            for i, m in enumerate(mobiles)
        }
        for op, index, side in ops:
            if op == "one_way":
                messaging.message_send(
                    sender=business, recipient_phone_number=mobiles[index].phone_number, content="notice"
                )
            elif op == "chat":
                send(open_for[index], author_of(open_for[index], side))
            else:
                services.conversation_close(conversation_id=open_for[index].pk, participant=business)
                open_for[index], _ = services.conversation_get_or_create(
                    business=business, mobile_phone_number=mobiles[index].phone_number
                )

        messages = list(Message.objects.select_related("conversation"))
        for m in messages:
            assert (m.kind == Kind.CHAT) == (m.conversation_id is not None)
            if m.kind == Kind.ONE_WAY:
                assert (m.sender_id, m.sender_mobile_id, m.recipient_business_id) == (business.pk, None, None)
            else:
                # A chat message goes between exactly the conversation's two participants.
                parties = {m.author_party, m.recipient_party}
                assert parties == {
                    Party.business(m.conversation.business_id),
                    Party.mobile(m.conversation.mobile_id),
                }

        # The database keeps the rule for any row, however it is written.
        some_chat = next((m for m in messages if m.kind == Kind.CHAT), None)
        some_one_way = next((m for m in messages if m.kind == Kind.ONE_WAY), None)
        if some_chat is not None:
            rows = Message.objects.filter(pk=some_chat.pk)
            assert refused(lambda: rows.update(conversation=None))
            assert refused(lambda: rows.update(kind=Kind.ONE_WAY))
        if some_one_way is not None:
            rows = Message.objects.filter(pk=some_one_way.pk)
            assert refused(lambda: rows.update(conversation=open_for[0]))
            assert refused(lambda: rows.update(kind=Kind.CHAT))
        transaction.set_rollback(True)


def _chat_without_conversation(c: Conversation) -> dict:
    return {"kind": Kind.CHAT, "conversation": None, "sender": c.business, "recipient": c.mobile}


def _one_way_in_a_conversation(c: Conversation) -> dict:
    return {"kind": Kind.ONE_WAY, "conversation": c, "sender": c.business, "recipient": c.mobile}


def _one_way_from_a_mobile_user(c: Conversation) -> dict:
    return {"kind": Kind.ONE_WAY, "sender_mobile": c.mobile, "recipient_business": c.business}


def _one_way_to_a_business_user(c: Conversation) -> dict:
    return {"kind": Kind.ONE_WAY, "sender": c.business, "recipient_business": c.business}


@pytest.mark.parametrize(
    "fields",
    [
        _chat_without_conversation,
        _one_way_in_a_conversation,
        _one_way_from_a_mobile_user,
        _one_way_to_a_business_user,
    ],
)
def test_database_refuses_messages_whose_kind_does_not_match_their_conversation(fields, conversation):
    assert refused(lambda: Message.objects.create(seq=1, content="x", **fields(conversation)))
    assert not Message.objects.exists()


# --- (b) one open conversation per pair -------------------------------------------------------


pair_operations = st.lists(
    st.tuples(
        st.sampled_from(["get_or_create", "archive", "close", "archive_old", "close_old"]),
        st.integers(min_value=0, max_value=1),
        st.integers(min_value=0, max_value=1),
    ),
    min_size=5,
    max_size=30,
)


@property_settings
@given(ops=pair_operations)
def test_at_most_one_open_conversation_per_pair(ops, db):
    with transaction.atomic():
        businesses = [SenderFactory(), SenderFactory()]
        mobiles = [MobileUserFactory(), MobileUserFactory()]
        # The model: each pair's open conversation (id, status), or None.
        model: dict[tuple[int, int], tuple[object, str] | None] = {
            (b, m): None for b in (0, 1) for m in (0, 1)
        }

        for op, b, m in ops:
            business, mobile = businesses[b], mobiles[m]
            current = model[b, m]
            if op == "get_or_create":
                conversation, created = services.conversation_get_or_create(
                    business=business, mobile_phone_number=mobile.phone_number
                )
                assert created == (current is None)
                if current is not None:
                    assert conversation.pk == current[0]
                model[b, m] = (conversation.pk, conversation.status)
            elif op in ("archive", "close") and current is not None:
                action = services.conversation_archive if op == "archive" else services.conversation_close
                action(conversation_id=current[0], participant=mobile)
                model[b, m] = (current[0], ARCHIVED) if op == "archive" else None
            elif op in ("archive_old", "close_old"):
                old = Conversation.objects.filter(business=business, mobile=mobile, status=CLOSED).first()
                if old is None:
                    continue
                if op == "archive_old":
                    with pytest.raises(ConversationClosed):
                        services.conversation_archive(conversation_id=old.pk, participant=business)
                else:
                    services.conversation_close(conversation_id=old.pk, participant=business)

            open_per_pair = {
                (row["business"], row["mobile"]): row["n"]
                for row in Conversation.objects.filter(status__in=OPEN)
                .values("business", "mobile")
                .annotate(n=Count("pk"))
            }
            assert set(open_per_pair.values()) <= {1}
            for (bi, mi), expected in model.items():
                found = Conversation.objects.filter(
                    business=businesses[bi], mobile=mobiles[mi], status__in=OPEN
                ).values_list("pk", "status")
                assert list(found) == ([expected] if expected else [])

        # The database refuses a second open conversation, whether inserted or reopened.
        for (bi, mi), current in model.items():
            if current is None:
                continue
            pair = {"business": businesses[bi], "mobile": mobiles[mi]}
            for status in OPEN:
                assert refused(lambda s=status, p=pair: Conversation.objects.create(**p, status=s))
            for old in Conversation.objects.filter(**pair, status=CLOSED):
                assert refused(lambda o=old: Conversation.objects.filter(pk=o.pk).update(status=ACTIVE))
        transaction.set_rollback(True)


# --- (c) unread accuracy ----------------------------------------------------------------------

UNREAD_OPS = [
    # Per message (the argument picks one of the messages sent so far).
    "write",
    "deliver",
    "ack",
    "read",
    "read_by_author",
    "fail",
    "requeue",
    # Per conversation (the argument picks one) and side.
    "send",
    "send",
    "mark_read",
    "archive",
    # Across both conversations.
    "business_reads_across",
    "release",
    "ack_timeout_sweep",
    "expire_sweep",
]
# Flat and uniform over the operations: each step is (operation, argument, side).
unread_operations = st.lists(
    st.tuples(st.sampled_from(UNREAD_OPS), st.integers(min_value=0, max_value=2**16), SIDES),
    min_size=5,
    max_size=40,
)


@dataclass
class Chat:
    """Two conversations of one business user, with two mobile users, and their messages."""

    conversations: list[Conversation]
    messages: list[Message] = field(default_factory=list)

    @property
    def business(self):
        return self.conversations[0].business

    def message(self, index: int) -> Message | None:
        return self.messages[index % len(self.messages)] if self.messages else None

    def apply(self, op: str, arg: int, side: str) -> None:
        """Run one step through the real services."""
        conversation = self.conversations[arg % len(self.conversations)]
        if op == "send":
            self.messages.append(send(conversation, author_of(conversation, side)))
        elif op == "mark_read":
            services.conversation_mark_read(
                conversation_id=conversation.pk, reader=author_of(conversation, side)
            )
        elif op == "business_reads_across":
            # One receipt naming messages of both conversations, as a business socket sends.
            picked = random.Random(arg).sample(self.messages, k=min(len(self.messages), 4))
            messaging.messages_mark_read(
                recipient=Party(BUSINESS, self.business.pk), message_ids=[m.pk for m in picked]
            )
        elif op == "release":
            ids = [c.business_id if side == BUSINESS else c.mobile_id for c in self.conversations]
            messaging.messages_release_unacked(
                recipients=[Party(side, i) for i in ids], reason="connection closed"
            )
        elif op == "ack_timeout_sweep":
            messaging.sweep_ack_timeouts()
        elif op == "expire_sweep":
            expired = Message.objects.filter(pk__in=[m.pk for m in self.messages[::3]])
            expired.update(expires_at=timezone.now() - timedelta(seconds=1))
            messaging.sweep_expired()
        elif op == "archive":
            services.conversation_archive(
                conversation_id=conversation.pk, participant=author_of(conversation, side)
            )
        else:
            self._apply_to_message(op, self.message(arg))

    def _apply_to_message(self, op: str, message: Message | None) -> None:
        if message is None:
            return
        recipient, author = message.recipient_party, message.author_party
        if op == "write":
            messaging.messages_mark_sent([message.pk])
        elif op == "deliver":
            messaging.message_deliver(message_id=message.pk)  # nobody is online: pending
        elif op == "ack":
            messaging.messages_acknowledge(recipient=recipient, message_ids=[message.pk])
        elif op == "read":
            messaging.messages_mark_read(recipient=recipient, message_ids=[message.pk])
        elif op == "read_by_author":
            # Not the author's to read: ignored.
            messaging.messages_mark_read(recipient=author, message_ids=[message.pk])
        elif op == "fail":
            messaging.messages_fail(Message.objects.filter(pk=message.pk), reason="permanent error")
        elif op == "requeue":
            messaging.dead_letters_requeue(dead_letters=DeadLetter.objects.filter(message_id=message.pk))


@property_settings
@given(ops=unread_operations)
def test_unread_counters_equal_the_unread_messages_after_every_step(ops, db, redis, settings):
    # Every `sent` message is due for the ack-timeout sweep at once, and two retries make the
    # give-up (failed, dead-lettered) reachable in short sequences.
    settings.MESSAGING_ACK_TIMEOUT_SECONDS = 0
    settings.MESSAGING_MAX_RETRIES = MAX_RETRIES
    with transaction.atomic():
        business = SenderFactory()
        chat = Chat([ConversationFactory(business=business), ConversationFactory(business=business)])
        for op, arg, side in [
            ("send", 0, BUSINESS),
            ("send", 0, MOBILE),
            ("send", 1, BUSINESS),
            ("send", 1, MOBILE),
        ]:
            chat.apply(op, arg, side)
        for step, (op, arg, side) in enumerate(ops):
            chat.apply(op, arg, side)
            assert_counters_exact(chat.conversations, step=(step, op, arg, side))
        transaction.set_rollback(True)


@pytest.mark.django_db(transaction=True)
def test_unread_counters_stay_exact_when_threads_read_and_send_at_once(redis, settings):
    settings.MESSAGING_ACK_TIMEOUT_SECONDS = 0
    conversation = ConversationFactory()
    business, mobile = conversation.business, conversation.mobile
    for _ in range(5):
        send(conversation, business)
        send(conversation, mobile)
    rounds = 12

    def reader_and_writer(side: str) -> None:
        me = author_of(conversation, side)
        for i in range(rounds):
            send(conversation, me)
            if i % 3 == 0:
                services.conversation_mark_read(conversation_id=conversation.pk, reader=me)
            else:
                mine = Message.objects.filter(conversation=conversation, **inbox_of(conversation, side))
                ids = list(mine.exclude(status=Status.READ).values_list("pk", flat=True)[:2])
                messaging.messages_mark_read(recipient=Party(side, me.pk), message_ids=ids)

    def deliverer() -> None:
        for i in range(rounds):
            undelivered = Message.objects.filter(conversation=conversation, status=Status.QUEUED)
            messaging.messages_mark_sent(list(undelivered.values_list("pk", flat=True)[:3]))
            if i % 2:
                messaging.sweep_ack_timeouts()
            sent = Message.objects.filter(conversation=conversation, status=Status.SENT)
            victim = list(sent.order_by("?").values_list("pk", flat=True)[:1])
            messaging.messages_fail(Message.objects.filter(pk__in=victim), reason="permanent error")
            messaging.dead_letters_requeue(
                dead_letters=DeadLetter.objects.filter(message__conversation=conversation)
            )

    run_together(partial(reader_and_writer, BUSINESS), partial(reader_and_writer, MOBILE), deliverer)

    assert Message.objects.filter(conversation=conversation).count() == 10 + 2 * rounds
    assert_counters_exact([conversation])
    # And reading everything brings both counters to zero.
    services.conversation_mark_read(conversation_id=conversation.pk, reader=business)
    services.conversation_mark_read(conversation_id=conversation.pk, reader=mobile)
    conversation.refresh_from_db()
    assert (conversation.unread_business, conversation.unread_mobile) == (0, 0)


# --- (d) both sides can always write to an open conversation ----------------------------------


any_operations = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["send", "archive", "close", "mark_read"]), SIDES),
        st.tuples(st.sampled_from(["get_or_create", "fail_one", "requeue_all", "read_one"]), st.none()),
    ),
    min_size=5,
    max_size=25,
)


@property_settings
@given(ops=any_operations)
def test_both_sides_can_always_write_to_an_open_conversation(ops, db):
    with transaction.atomic():
        business, mobile = SenderFactory(), MobileUserFactory()
        latest, _ = services.conversation_get_or_create(
            business=business, mobile_phone_number=mobile.phone_number
        )
        for op, side in ops:
            latest = Conversation.objects.get(pk=latest.pk)
            author = author_of(latest, side) if side else None
            if op == "send":
                if latest.status == CLOSED:
                    with pytest.raises(ConversationClosed):
                        send(latest, author)
                else:
                    send(latest, author)
            elif op in ("archive", "close"):
                action = services.conversation_archive if op == "archive" else services.conversation_close
                if op == "archive" and latest.status == CLOSED:
                    with pytest.raises(ConversationClosed):
                        action(conversation_id=latest.pk, participant=author)
                else:
                    action(conversation_id=latest.pk, participant=author)
            elif op == "mark_read":
                services.conversation_mark_read(conversation_id=latest.pk, reader=author)
            elif op == "get_or_create":
                latest, _ = services.conversation_get_or_create(
                    business=business, mobile_phone_number=mobile.phone_number
                )
            elif op == "fail_one":
                victim = list(Message.objects.filter(kind=Kind.CHAT).values_list("pk", flat=True)[:1])
                messaging.messages_fail(Message.objects.filter(pk__in=victim), reason="permanent error")
            elif op == "requeue_all":
                messaging.dead_letters_requeue(dead_letters=DeadLetter.objects.all())
            elif op == "read_one":
                m = Message.objects.filter(kind=Kind.CHAT).exclude(status=Status.READ).first()
                if m is not None:
                    messaging.messages_mark_read(recipient=m.recipient_party, message_ids=[m.pk])

            open_now = list(Conversation.objects.filter(business=business, mobile=mobile, status__in=OPEN))
            assert len(open_now) <= 1
            for conversation in open_now:
                _assert_both_sides_can_write(conversation)
        transaction.set_rollback(True)


def _assert_both_sides_can_write(conversation: Conversation) -> None:
    """Send from each side in a savepoint that is then undone, so the sequence is not altered."""
    with transaction.atomic():
        sent = [send(conversation, author_of(conversation, side)) for side in (BUSINESS, MOBILE)]
        after = Conversation.objects.get(pk=conversation.pk)
        assert after.status == ACTIVE
        assert after.last_message_id == sent[-1].pk
        assert [m.recipient_party for m in sent] == [
            Party.mobile(conversation.mobile_id),
            Party.business(conversation.business_id),
        ]
        transaction.set_rollback(True)
