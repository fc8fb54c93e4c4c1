"""Chat end to end through real daphne, Celery worker and beat: a mobile app and a business desk.

Both sides talk over their real WebSockets (`/ws/mobile/`, `/ws/business/`): `chat.send`, the
other side's `message` frame, acks and read receipts, the author's `status` frames, `typing`,
and the catch-up of the side that was offline. One set of processes serves the whole module.
"""

from __future__ import annotations

import itertools

import pytest

from apps.accounts import presence
from apps.accounts.models import PartyKind
from apps.accounts.party import Party

from .harness import MobileSocket

pytestmark = pytest.mark.e2e

TIMEOUT = 20
_client_ids = itertools.count(1)


# --- helpers --------------------------------------------------------------------------------


def start_conversation(sender, mobile) -> str:
    response = sender.api.post("/api/v1/conversations/", {"mobile_phone_number": mobile.user.phone_number})
    assert response.status == 201, (response.status, response.body)
    return response.body["id"]


def connect_business(e2e, sender, **kwargs) -> MobileSocket:
    return e2e.connect(url=e2e.stack.business_ws_url, token=sender.token, **kwargs)


def chat_send(socket: MobileSocket, conversation_id: str, content: str) -> dict:
    """Send `chat.send` and return the stored message (M) of its `chat.accepted` answer."""
    client_id = f"c{next(_client_ids)}"
    socket.send(
        {"type": "chat.send", "conversation_id": conversation_id, "content": content, "client_id": client_id}
    )

    def answer(s):
        return next((f for f in s.frames if f.get("client_id") == client_id), None)

    frame = socket.wait_for(answer, timeout=TIMEOUT, what=f"the answer to chat.send {client_id}")
    assert frame["type"] == "chat.accepted", frame
    return frame["message"]


def wait_message(socket: MobileSocket, message_id: str) -> dict:
    return socket.wait_for(
        lambda s: next((m for m in s.messages() if m["id"] == message_id), None),
        timeout=TIMEOUT,
        what=f"the message frame of {message_id}",
    )


def collapsed(statuses: list[str]) -> list[str]:
    """Drop repeats in a row: an ack timeout on a slow machine may report `sent` twice."""
    return [s for i, s in enumerate(statuses) if i == 0 or statuses[i - 1] != s]


def wait_statuses(socket: MobileSocket, message_id: str, expected: list[str]) -> None:
    socket.wait_for(
        lambda s: collapsed(s.statuses(message_id)) == expected,
        timeout=TIMEOUT,
        what=f"status frames {expected} for {message_id}",
    )


def conversation_statuses(e2e, token: str, conversation_id: str) -> dict[str, str]:
    response = e2e.api.as_(token).get(f"/api/v1/conversations/{conversation_id}/messages/?page_size=500")
    assert response.status == 200, (response.status, response.body)
    return {m["id"]: m["status"] for m in response.body["results"]}


def wait_offline(e2e, user, kind: str) -> None:
    """Wait until the server has processed the close of the user's last socket."""
    e2e.stack.wait(
        lambda: not presence.is_online(Party(kind, user.pk)), timeout=TIMEOUT, what=f"{kind} offline"
    )


def wait_pending(e2e, token: str, conversation_id: str, ids: list[str]) -> None:
    """Wait until the worker found the recipient offline for each of `ids`."""
    e2e.stack.wait(
        lambda: all(conversation_statuses(e2e, token, conversation_id).get(pk) == "pending" for pk in ids),
        timeout=TIMEOUT,
        what=f"{len(ids)} chat message(s) to be pending",
    )


# --- tests ----------------------------------------------------------------------------------


def test_mobile_and_business_chat_both_ways_with_status_receipts(e2e):
    sender, mobile = e2e.sender(), e2e.mobile()
    conversation_id = start_conversation(sender, mobile)
    phone = e2e.connect(mobile, acking=False)
    desk = connect_business(e2e, sender, acking=False)

    question = chat_send(phone, conversation_id, "Is my order shipped?")
    assert (question["kind"], question["conversation_id"], question["seq"]) == ("chat", conversation_id, 1)
    assert question["sender"] == {"type": "mobile", "id": mobile.user.pk, "name": "E2E"}
    assert wait_message(desk, question["id"]) == question
    desk.ack([question["id"]])
    wait_statuses(phone, question["id"], ["sent", "delivered"])
    desk.read([question["id"]])
    wait_statuses(phone, question["id"], ["sent", "delivered", "read"])

    answer = chat_send(desk, conversation_id, "Yes, it left this morning.")
    assert (answer["kind"], answer["conversation_id"], answer["seq"]) == ("chat", conversation_id, 1)
    assert answer["sender"] == {"type": "business", "id": sender.user.pk, "name": sender.user.username}
    assert wait_message(phone, answer["id"]) == answer
    phone.ack([answer["id"]])
    wait_statuses(desk, answer["id"], ["sent", "delivered"])
    phone.read([answer["id"]])
    wait_statuses(desk, answer["id"], ["sent", "delivered", "read"])

    # The sender sees its chat message like any other, with every timestamp.
    detail = e2e.message(sender, answer["id"])
    assert (detail["status"], detail["kind"]) == ("read", "chat")
    assert all(detail[f] is not None for f in ("sent_at", "delivered_at", "read_at"))
    unread = e2e.api.as_(mobile.token).get("/api/v1/conversations/unread-count/")
    assert unread.body == {"conversations": 0, "messages": 0}
    # Each side got only the other's message, and status frames only for its own.
    for socket in (phone, desk):
        socket.wait_ready()
    assert [m["id"] for m in phone.messages()] == [answer["id"]]
    assert [m["id"] for m in desk.messages()] == [question["id"]]
    assert {f["message_id"] for f in phone.frames_of("status")} == {question["id"]}
    assert {f["message_id"] for f in desk.frames_of("status")} == {answer["id"]}


def test_typing_is_relayed_to_the_other_participant_only(e2e):
    sender, mobile, stranger = e2e.sender(), e2e.mobile(), e2e.mobile()
    conversation_id = start_conversation(sender, mobile)
    start_conversation(sender, stranger)
    phone = e2e.connect(mobile)
    desk = connect_business(e2e, sender)
    strangers = e2e.connect(stranger)

    phone.send({"type": "typing", "conversation_id": conversation_id, "is_typing": True})
    desk.wait_for(lambda s: s.frames_of("typing"), timeout=TIMEOUT, what="the typing frame")
    desk.send({"type": "typing", "conversation_id": conversation_id, "is_typing": False})
    phone.wait_for(lambda s: s.frames_of("typing"), timeout=TIMEOUT, what="the typing frame")

    for socket in (phone, desk, strangers):
        socket.wait_ready()
    assert desk.frames_of("typing") == [
        {"type": "typing", "conversation_id": conversation_id, "is_typing": True}
    ]
    assert phone.frames_of("typing") == [
        {"type": "typing", "conversation_id": conversation_id, "is_typing": False}
    ]
    assert strangers.frames_of("typing") == []
    # Typing is never stored: the conversation has no messages.
    assert conversation_statuses(e2e, mobile.token, conversation_id) == {}


def test_business_offline_receives_the_mobiles_messages_in_seq_order_on_connect(e2e):
    sender, mobile = e2e.sender(), e2e.mobile()
    conversation_id = start_conversation(sender, mobile)
    phone = e2e.connect(mobile)
    # The desk was online once and went away.
    connect_business(e2e, sender).close()
    wait_offline(e2e, sender.user, PartyKind.BUSINESS)

    ids = [chat_send(phone, conversation_id, f"while you were away #{n}")["id"] for n in (1, 2, 3)]
    wait_pending(e2e, mobile.token, conversation_id, ids)

    desk = connect_business(e2e, sender, ready=False)  # acknowledges what it gets
    desk.wait_for(lambda s: len(s.messages()) >= 3, timeout=TIMEOUT, what="the backlog")
    for pk in ids:
        wait_statuses(phone, pk, ["sent", "delivered"])
    desk.wait_ready()
    received = desk.messages()
    assert [(m["id"], m["seq"]) for m in received[:3]] == list(zip(ids, [1, 2, 3], strict=True))
    assert [m["content"] for m in received[:3]] == [f"while you were away #{n}" for n in (1, 2, 3)]
    # Anything after the backlog can only be a redelivery of it (at-least-once on the wire).
    assert {m["id"] for m in received[3:]} <= set(ids)
    assert set(conversation_statuses(e2e, mobile.token, conversation_id).values()) == {"delivered"}


def test_mobile_offline_receives_the_business_messages_in_seq_order_on_reconnect(e2e):
    sender, mobile = e2e.sender(), e2e.mobile()
    conversation_id = start_conversation(sender, mobile)
    desk = connect_business(e2e, sender)
    e2e.connect(mobile).close()
    wait_offline(e2e, mobile.user, PartyKind.MOBILE)

    ids = [chat_send(desk, conversation_id, f"update #{n}")["id"] for n in (1, 2, 3)]
    wait_pending(e2e, sender.token, conversation_id, ids)

    phone = e2e.connect(mobile, ready=False)
    phone.wait_for(lambda s: len(s.messages()) >= 3, timeout=TIMEOUT, what="the backlog")
    for pk in ids:
        wait_statuses(desk, pk, ["sent", "delivered"])
    phone.wait_ready()
    received = phone.messages()
    assert [(m["id"], m["seq"]) for m in received[:3]] == list(zip(ids, [1, 2, 3], strict=True))
    assert {m["id"] for m in received[3:]} <= set(ids)
