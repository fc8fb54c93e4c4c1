"""Tenant isolation, generated from the URL conf: nobody reaches another owner's objects.

Every `/api/v1/` route and every method its view implements is called by another sender (B)
and another mobile user (N) on the objects of sender A and mobile user M. Each call must answer
404 (not yours), or 403 where the caller's kind may never use the endpoint, exactly as it
answers for an id that does not exist (so no answer tells an object exists), and no row of any
table the API writes may change. The routes come from `django.urls.get_resolver()`: a new route
whose URL kwargs have no factory in `OBJECT_FACTORIES`, or a route without kwargs that is not in
`EXEMPT` (with its reason), fails `test_every_api_route_is_covered`, so no endpoint can be
forgotten. Lists, filtered by owner, are checked separately: A's and M's objects never appear in
B's or N's lists. The sockets get the same treatment: receipts for another's message ids are
ignored, chat and typing into another's conversation are refused, nothing is stored or relayed.

To cover a new kind of object (e.g. the webhooks app's `webhook_id`, `delivery_id`), add a
factory to `OBJECT_FACTORIES` (kwarg name -> function of the `World`, returning A's or M's
objects as (label, id) pairs), and a body to `BODIES` for a write that validates one first.
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
from django.apps import apps as django_apps
from django.core.files.uploadedfile import SimpleUploadedFile
from django.urls import URLPattern, URLResolver, get_resolver
from django.utils import timezone
from PIL import Image
from rest_framework.test import APIClient

from apps.accounts.models import MobileUser, User
from apps.accounts.services import token_create
from apps.conversations.services import conversation_message_send
from apps.devices.services import device_register
from apps.media.services import media_upload
from apps.messaging import services
from apps.messaging.models import DeadLetter, Message
from apps.webhooks.models import WebhookDelivery, WebhookEvent
from apps.webhooks.services import endpoint_create
from tests.factories import ConversationFactory, MobileUserFactory, SenderFactory

pytestmark = pytest.mark.django_db(transaction=True)

API_PREFIX = "api/v1/"
METHODS = ("get", "post", "put", "patch", "delete")
ALL_PERMISSIONS = ["send_message", "send_broadcast", "chat", "manage_dead_letters"]

# Routes that name no object, each with why the matrix does not apply and what covers it.
EXEMPT: dict[str, str] = {
    "messages/": "list filtered by owner (test_lists_never_show_another_owners_objects); POST sends",
    "messages/batch/": "creates the caller's own messages only; names no object",
    "messages/broadcast/": "creates the caller's own broadcast only; names no object",
    "dead-letters/": "list filtered by owner (test_lists_never_show_another_owners_objects)",
    "dead-letters/requeue/": "ids in the body: test_bulk_requeue_of_another_senders_dead_letter_is_404",
    "conversations/": "list filtered by owner (test_lists...); POST get-or-creates the caller's own",
    "conversations/unread-count/": "the caller's own counts only: test_unread_count_is_the_callers_own",
    "media/": "upload: creates the caller's own media only",
    "devices/": "list filtered by owner (test_lists...); POST registers the caller's own device",
    "mobile/me/preferences/": "the caller's own preferences; names no object",
    "realtime/tickets/": "issues a ticket for the caller itself",
    "webhooks/": "list filtered by owner (test_lists...); POST registers the caller's own endpoint",
    "mobile/me/": "the caller itself (export, erasure); names no other party",
    "mobile/me/export/": "the caller's own data only; names no other party",
}

# Request bodies for the writes that validate a body before looking the object up: with a
# valid body, a missing ownership check would answer 2xx, not 400.
BODIES: dict[tuple[str, str], dict] = {
    ("conversations/<str:conversation_id>/messages/", "post"): {"content": "hijack"},
    ("devices/<int:device_id>/", "patch"): {"is_active": False},
    ("webhooks/<int:endpoint_id>/", "patch"): {"is_active": False, "events": ["message.read"]},
}


@dataclass
class World:
    """Sender A and mobile user M (the owners), B and N (the others), and A's and M's objects."""

    a: User
    b: User
    m: MobileUser
    n: MobileUser
    one_way: Message
    chat_from_a: Message
    chat_from_m: Message
    conversation_id: uuid.UUID
    media_of_a: uuid.UUID
    media_of_m: uuid.UUID
    device_id: int
    dead_letter_id: int
    broadcast_id: uuid.UUID
    endpoint_id: int
    delivery_id: int


# URL kwarg -> the owners' objects it can name, as (label, value): add one for a new kind.
OBJECT_FACTORIES: dict[str, Callable[[World], list[tuple[str, object]]]] = {
    "message_id": lambda w: [
        ("one-way A->M", w.one_way.pk),
        ("chat A->M", w.chat_from_a.pk),
        ("chat M->A", w.chat_from_m.pk),
    ],
    "conversation_id": lambda w: [("conversation A-M", w.conversation_id)],
    "media_id": lambda w: [("media of A", w.media_of_a), ("media of M", w.media_of_m)],
    "device_id": lambda w: [("device of M", w.device_id)],
    "dead_letter_id": lambda w: [("dead letter of A", w.dead_letter_id)],
    "broadcast_id": lambda w: [("broadcast of A", w.broadcast_id)],
    "endpoint_id": lambda w: [("webhook endpoint of A", w.endpoint_id)],
    "delivery_id": lambda w: [("webhook delivery of A", w.delivery_id)],
}

# An id of the same shape that names nothing: the answer for another's object must match it.
MISSING_IDS: dict[str, object] = {
    "message_id": uuid.UUID(int=1),
    "conversation_id": uuid.UUID(int=1),
    "media_id": uuid.UUID(int=1),
    "device_id": 2_000_000_000,
    "dead_letter_id": 2_000_000_000,
    "broadcast_id": uuid.UUID(int=1),
    "endpoint_id": 2_000_000_000,
    "delivery_id": 2_000_000_000,
}


# --- the routes -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    route: str  # relative to /api/v1/, as written in the URL conf
    kwargs: tuple[str, ...]
    methods: tuple[str, ...]

    def path(self, values: dict[str, object]) -> str:
        def fill(match: re.Match) -> str:
            return str(values[match.group(1)])

        return "/" + API_PREFIX + re.sub(r"<(?:\w+:)?(\w+)>", fill, self.route)


def _walk(patterns, prefix: str = "") -> Iterator[tuple[str, URLPattern]]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern))
        elif isinstance(entry, URLPattern):
            yield prefix + str(entry.pattern), entry


def api_routes() -> list[Route]:
    """Return every /api/v1/ route of the URL conf with the methods its view implements."""
    routes = []
    for full, pattern in _walk(get_resolver().url_patterns):
        if not full.startswith(API_PREFIX):
            continue
        view = getattr(pattern.callback, "view_class", None) or getattr(pattern.callback, "cls", None)
        assert view is not None, f"{full}: not a class-based view; give it a case here"
        methods = tuple(m for m in METHODS if hasattr(view, m))
        kwargs = tuple(re.findall(r"<(?:\w+:)?(\w+)>", full))
        routes.append(Route(full.removeprefix(API_PREFIX), kwargs, methods))
    return routes


def test_every_api_route_is_covered():
    routes = api_routes()
    assert len(routes) > 10, "the URL conf walk found almost nothing"
    uncovered = [
        f"{r.route} (kwargs {', '.join(k for k in r.kwargs if k not in OBJECT_FACTORIES)})"
        for r in routes
        if r.kwargs and not all(k in OBJECT_FACTORIES for k in r.kwargs)
    ]
    unexempt = [r.route for r in routes if not r.kwargs and r.route not in EXEMPT]
    assert not uncovered, f"routes naming objects no factory makes (add to OBJECT_FACTORIES): {uncovered}"
    assert not unexempt, f"routes naming no object and not in EXEMPT (say why, or test them): {unexempt}"
    stale = set(EXEMPT) - {r.route for r in routes}
    assert not stale, f"EXEMPT names routes that no longer exist: {sorted(stale)}"
    assert not set(BODIES) - {(r.route, m) for r in routes for m in r.methods}, "BODIES names unknown calls"


# --- the world ------------------------------------------------------------------------------


def _png(uploader) -> uuid.UUID:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, "PNG")
    upload = SimpleUploadedFile("a.png", buffer.getvalue(), content_type="image/png")
    return media_upload(uploader=uploader, upload=upload).pk


@pytest.fixture
def world(settings, tmp_path, redis) -> World:
    settings.MEDIA_ROOT = str(tmp_path)
    a = SenderFactory(permissions=ALL_PERMISSIONS)
    b = SenderFactory(permissions=ALL_PERMISSIONS)
    m, n = MobileUserFactory(), MobileUserFactory()
    # B and N have objects of their own too, so "nothing of A's" is not "nothing at all".
    for sender, mobile in ((a, m), (b, n)):
        ConversationFactory(business=sender, mobile=mobile)
    conversation_id = _conversation_of(a, m).pk
    one_way = services.message_send(sender=a, recipient_phone_number=m.phone_number, content="to M")
    services.message_send(sender=b, recipient_phone_number=n.phone_number, content="to N")
    chat_from_a = conversation_message_send(conversation_id=conversation_id, author=a, content="from A")
    chat_from_m = conversation_message_send(conversation_id=conversation_id, author=m, content="from M")
    failed = services.message_send(sender=a, recipient_phone_number=m.phone_number, content="will fail")
    services.messages_fail(Message.objects.filter(pk=failed.pk), reason="test")
    device, _ = device_register(mobile_user=m, token="m-device-token", platform="android")
    device_register(mobile_user=n, token="n-device-token", platform="ios")
    broadcast = services.broadcast_create(sender=a, recipient_ids=[m.pk], content="to all of A's")
    # Last, so that the messages above record no webhook events of their own.
    endpoint, delivery_id = _webhook_with_a_delivery(a)
    _webhook_with_a_delivery(b)
    return World(
        a=a,
        b=b,
        m=m,
        n=n,
        one_way=one_way,
        chat_from_a=chat_from_a,
        chat_from_m=chat_from_m,
        conversation_id=conversation_id,
        media_of_a=_png(a),
        media_of_m=_png(m),
        device_id=device.pk,
        dead_letter_id=DeadLetter.objects.get(message=failed).pk,
        broadcast_id=broadcast.pk,
        endpoint_id=endpoint.pk,
        delivery_id=delivery_id,
    )


def _webhook_with_a_delivery(owner: User):
    endpoint = endpoint_create(
        owner=owner, url=f"https://hooks.example.com/{owner.pk}", events=["message.sent"]
    )
    now = timezone.now()
    event = WebhookEvent.objects.create(
        endpoint=endpoint, type="message.sent", payload={}, created_at=now, status="given_up"
    )
    delivery = WebhookDelivery.objects.create(
        event=event, endpoint=endpoint, attempt=1, outcome="gave_up", at=now
    )
    return endpoint, delivery.pk


def _conversation_of(a: User, m: MobileUser):
    from apps.conversations.models import Conversation

    return Conversation.objects.get(business=a, mobile=m)


def client_for(principal) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token_create(owner=principal)}")
    return client


# Every table of the apps the API writes to (new apps' tables are picked up by label).
def snapshot() -> dict[str, list[dict]]:
    """Return every row of every model of our apps (small: the world has a few dozen rows)."""
    rows = {}
    for model in django_apps.get_models():
        if not model.__module__.startswith("apps.") or model._meta.label == "accounts.ApiToken":
            continue
        rows[model._meta.label] = list(model.objects.order_by("pk").values())
    return rows


# --- the matrix -----------------------------------------------------------------------------


def _calls(world: World) -> Iterator[tuple[Route, str, str, dict[str, object], dict[str, object]]]:
    """Yield (route, method, label, kwargs naming the owners' object, kwargs naming nothing)."""
    for route in api_routes():
        if not route.kwargs:
            continue
        variants: list[tuple[str, dict[str, object]]] = [("", {})]
        for name in route.kwargs:
            variants = [
                (f"{label} {lbl}".strip(), {**values, name: value})
                for label, values in variants
                for lbl, value in OBJECT_FACTORIES[name](world)
            ]
        missing = {name: MISSING_IDS.get(name, uuid.UUID(int=1)) for name in route.kwargs}
        for method in route.methods:
            for label, values in variants:
                yield route, method, label, values, missing


def _call(client: APIClient, method: str, path: str, body: dict | None):
    return (
        getattr(client, method)(path, body, format="json")
        if body is not None
        else getattr(client, method)(path)
    )


def test_others_get_404_or_403_on_every_route_and_nothing_changes(world):
    callers = {"sender B": client_for(world.b), "mobile N": client_for(world.n)}
    failures, calls, statuses = [], 0, {}
    for route, method, label, values, missing in _calls(world):
        body = BODIES.get((route.route, method))
        for caller, client in callers.items():
            before = snapshot()
            response = _call(client, method, route.path(values), body)
            after = snapshot()
            calls += 1
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            what = f"{caller} {method.upper()} {route.route} on {label}"
            if response.status_code not in (403, 404):
                failures.append(f"{what}: {response.status_code} {response.content[:200]!r}")
                continue
            # Same answer as for an id that names nothing: existence is not disclosed.
            control = _call(client, method, route.path(missing), body)
            if (control.status_code, control.json()) != (response.status_code, response.json()):
                failures.append(
                    f"{what}: {response.status_code} differs from a missing id's {control.status_code}"
                )
            changed = [label for label in before if before[label] != after[label]]
            if changed:
                failures.append(f"{what}: changed {changed}")
    assert not failures, "\n".join(failures)
    # Two callers x every (route, method, object) of the URL conf.
    assert calls >= 2 * 20, calls
    print(
        f"\nHOSTILE tenants_http: routes={len({r.route for r, *_ in _calls(world)})} calls={calls} "
        f"403={statuses.get(403, 0)} 404={statuses.get(404, 0)} other=0 changed=0"
    )


def test_the_owners_reach_their_own_objects(world):
    """The matrix's objects are real: their owners' GETs answer 200 on every route.

    Not on every variant: `messages/{id}/` shows a sender the messages it sent, so M's chat
    message to A is reachable by nobody there (the matrix still shows B and N cannot either).
    """
    owners = [client_for(world.a), client_for(world.m)]
    reached: dict[str, list[str]] = {}
    for route, method, label, values, _ in _calls(world):
        if method != "get":
            continue
        answers = [_call(client, "get", route.path(values), None).status_code for client in owners]
        reached.setdefault(route.route, [])
        if 200 in answers:
            reached[route.route].append(label)
    assert len(reached) >= 6
    assert all(reached.values()), {route: labels for route, labels in reached.items() if not labels}
    assert reached["messages/<str:message_id>/"] == ["one-way A->M", "chat A->M"]


# --- what the matrix exempts ----------------------------------------------------------------


def _ids(client: APIClient, path: str) -> set[str]:
    response = client.get(path, {"page_size": 500})
    assert response.status_code in (200, 403), (path, response.status_code)
    return (
        {str(item["id"]) for item in response.json().get("results", [])}
        if response.status_code == 200
        else set()
    )


def test_lists_never_show_another_owners_objects(world):
    a, b, m, n = (client_for(p) for p in (world.a, world.b, world.m, world.n))
    messages = {str(world.one_way.pk), str(world.chat_from_a.pk)}
    conversation, device, dead_letter = (
        str(world.conversation_id),
        str(world.device_id),
        str(world.dead_letter_id),
    )
    # Each owner sees its own (so the checks below are not vacuous) ...
    assert messages <= _ids(a, "/api/v1/messages/")
    assert dead_letter in _ids(a, "/api/v1/dead-letters/")
    assert conversation in _ids(a, "/api/v1/conversations/") & _ids(m, "/api/v1/conversations/")
    assert device in _ids(m, "/api/v1/devices/")
    # ... and the others never, though they have objects of their own.
    assert _ids(b, "/api/v1/messages/") and not _ids(b, "/api/v1/messages/") & (
        messages | {str(world.chat_from_m.pk)}
    )
    assert dead_letter not in _ids(b, "/api/v1/dead-letters/")
    for other in (b, n):
        assert _ids(other, "/api/v1/conversations/") and conversation not in _ids(
            other, "/api/v1/conversations/"
        )
    assert _ids(n, "/api/v1/devices/") and device not in _ids(n, "/api/v1/devices/")
    endpoint = str(world.endpoint_id)
    assert endpoint in _ids(a, "/api/v1/webhooks/")
    assert _ids(b, "/api/v1/webhooks/") and endpoint not in _ids(b, "/api/v1/webhooks/")


def test_bulk_requeue_of_another_senders_dead_letter_is_404(world):
    before = snapshot()
    response = client_for(world.b).post(
        "/api/v1/dead-letters/requeue/", {"ids": [world.dead_letter_id]}, format="json"
    )
    assert response.status_code == 404
    assert snapshot() == before


def test_unread_count_is_the_callers_own(world):
    # M has one unread message from A; N, whose own conversation is empty, has none.
    assert client_for(world.m).get("/api/v1/conversations/unread-count/").json() == {
        "conversations": 1,
        "messages": 1,
    }
    assert client_for(world.n).get("/api/v1/conversations/unread-count/").json() == {
        "conversations": 0,
        "messages": 0,
    }
    assert client_for(world.b).get("/api/v1/conversations/unread-count/").json() == {
        "conversations": 0,
        "messages": 0,
    }


def test_conversation_start_by_another_sender_is_a_conversation_of_its_own(world):
    response = client_for(world.b).post(
        "/api/v1/conversations/", {"mobile_phone_number": world.m.phone_number}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["id"] != str(world.conversation_id)


def test_attaching_another_owners_media_is_refused(world):
    before = Message.objects.count()
    for client, path, body in [
        (
            client_for(world.b),
            "/api/v1/messages/",
            {
                "recipient_phone_number": world.n.phone_number,
                "content": "x",
                "attachment_ids": [str(world.media_of_a)],
            },
        ),
        (
            client_for(world.n),
            f"/api/v1/conversations/{_nth_conversation(world.n)}/messages/",
            {"content": "x", "attachment_ids": [str(world.media_of_m)]},
        ),
    ]:
        response = client.post(path, body, format="json")
        assert response.status_code in (400, 404), (path, response.status_code, response.content)
    assert Message.objects.count() == before


def _nth_conversation(mobile: MobileUser) -> uuid.UUID:
    from apps.conversations.models import Conversation

    return Conversation.objects.get(mobile=mobile).pk


# --- the sockets ----------------------------------------------------------------------------


def _message_rows() -> list[tuple]:
    return list(
        Message.objects.order_by("pk").values_list("pk", "status", "delivered_at", "read_at", "content")
    )


# Every client frame type of the sockets (apps/realtime/consumers.py FRAME_HANDLERS) is tried on
# the other party's objects below, or named here with why it names none: a new frame type
# fails test_every_socket_frame_type_is_covered until it is one or the other.
SOCKET_FRAMES_TRIED = {"ack", "read", "chat.send", "typing"}
SOCKET_FRAMES_EXEMPT = {"ping": "a heartbeat; names no object"}


def test_every_socket_frame_type_is_covered():
    from apps.realtime.consumers import FRAME_HANDLERS

    assert set(FRAME_HANDLERS) == SOCKET_FRAMES_TRIED | set(SOCKET_FRAMES_EXEMPT)
    assert not SOCKET_FRAMES_TRIED & set(SOCKET_FRAMES_EXEMPT)


def _socket_state() -> dict[str, list[dict]]:
    """Every row a frame could change, but those the owners' own catch-up changes."""
    state = snapshot()
    # The owners' own catch-up moves their messages to `sent` (sent_at, attempts, A's
    # `message.sent` webhook events): messages are compared apart, by what a receipt would set.
    for label in ("messaging.Message", "messaging.DeliveryAttempt", "webhooks.WebhookEvent"):
        state.pop(label)
    return state


def test_socket_frames_on_another_partys_objects_are_ignored_or_refused(world):
    from asgiref.sync import async_to_sync

    from tests.realtime.conftest import QUIET, mobile_socket, receive, round_trip, send_frame

    tokens = {p: token_create(owner=p) for p in (world.a, world.b, world.m, world.n)}
    theirs_to_m = [str(world.one_way.pk), str(world.chat_from_a.pk)]
    conversation = str(world.conversation_id)
    own_conversations = {
        world.n: str(_nth_conversation(world.n)),
        world.b: str(_conversation_of(world.b, world.n).pk),
    }
    before, state_before = _message_rows(), _socket_state()
    tried: dict[str, int] = {}

    def count(kind: str) -> None:
        tried[kind] = tried.get(kind, 0) + 1

    async def scenario() -> None:
        async with (
            mobile_socket(tokens[world.m]) as m,
            mobile_socket(tokens[world.a], path="/ws/business/") as a,
            mobile_socket(tokens[world.n]) as n,
            mobile_socket(tokens[world.b], path="/ws/business/") as b,
        ):
            # The owners' catch-up (their own undelivered messages), so that what follows is quiet.
            for ws in (m, a, n, b):
                while not await ws.receive_nothing(QUIET):
                    await receive(ws)
            # Receipts for another's message ids: ignored silently (SPEC), nothing changes.
            for kind in ("ack", "read"):
                await send_frame(n, {"type": kind, "message_ids": theirs_to_m})
                await send_frame(b, {"type": kind, "message_ids": [str(world.chat_from_m.pk)]})
                count(kind)
                count(kind)
            for ws in (n, b):
                await round_trip(ws)
            # Chat and typing into A-M's conversation: not found, nothing stored or relayed.
            for ws in (n, b):
                await send_frame(
                    ws,
                    {"type": "chat.send", "conversation_id": conversation, "content": "hi", "client_id": "x"},
                )
                error = await receive(ws)
                assert (error["type"], error["code"], error["client_id"]) == ("error", "not_found", "x")
                count("chat.send")
                await send_frame(ws, {"type": "typing", "conversation_id": conversation, "is_typing": True})
                assert (await receive(ws))["code"] == "not_found"
                count("typing")
            # Another's media attached to a chat message in the caller's own conversation: refused.
            for ws, caller in ((n, world.n), (b, world.b)):
                for media in (world.media_of_a, world.media_of_m):
                    await send_frame(
                        ws,
                        {
                            "type": "chat.send",
                            "conversation_id": own_conversations[caller],
                            "content": "look",
                            "client_id": "y",
                            "attachment_ids": [str(media)],
                        },
                    )
                    error = await receive(ws)
                    assert (error["type"], error["client_id"]) == ("error", "y"), error
                    assert error["code"] == "invalid_attachment", error
                    count("chat.send")
            for ws in (m, a, n, b):
                assert await ws.receive_nothing(QUIET)

    async_to_sync(scenario)()
    after = _message_rows()
    # Only the owners' own catch-up may have moved their messages (queued/pending -> sent).
    assert [(r[0], r[2], r[3], r[4]) for r in after] == [(r[0], r[2], r[3], r[4]) for r in before]
    assert all(status != "delivered" and status != "read" for _, status, *_ in after)
    assert _socket_state() == state_before, "a refused or ignored frame changed a row"
    assert set(tried) == SOCKET_FRAMES_TRIED
    print(
        f"\nHOSTILE tenants_socket: frames={sum(tried.values())} "
        + " ".join(f"{kind}={n}" for kind, n in sorted(tried.items()))
        + " applied=0 relayed=0 changed=0"
    )
