"""Fault injection end to end: each test breaks one part of the running system and counts.

Every test gets processes of its own (two daphne processes, a Celery worker, Celery beat and a
private redis-server, tests/e2e/harness.py), breaks something while messages flow, and prints
a figure line `FAULT <name>: sent=N lost=N duplicated_to_app=N ...` (`pytest -s`):

- sent: messages the API answered 202 for;
- lost: of those, the ones not `delivered` (acked) at the end, or never seen by the app;
- duplicated_to_app: frames that arrived after the server had recorded their message's ack
  (SPEC.md section 2 forbids them; a redelivery of an unacked frame is allowed and counted as
  `redelivered`, the app deduplicates it by id).

The stacks run with the fast timings of the e2e suite (2 s ack timeout, sweeps every second)
but the spec's retry count (6), so that a fault of a few seconds exercises retries without
exhausting them; one test runs with the spec's 30 s ack timeout to show no frame waits for it.
"""

from __future__ import annotations

import itertools
import socket
import struct
import time
import uuid
from datetime import datetime

import pytest
from django.db.models import Count
from websockets.sync.client import connect as ws_connect

from apps.accounts import presence
from apps.accounts.party import Party
from apps.devices.models import DeviceToken
from apps.media.models import Media, MediaStatus, MediaType
from apps.messaging.models import DeadLetter, DeliveryAttempt, Message, Outcome, Status
from tests.devices.fake_apns import FakeApns
from tests.devices.fake_apns import Reply as ApnsReply
from tests.devices.fake_fcm import FakeFcm
from tests.devices.fake_fcm import Reply as FcmReply
from tests.devices.pki import APNS_KEY_ID, APNS_TEAM_ID, APNS_TOPIC, make_pki

from .faults import DELIVERED, App, Recorded, Sender, figures
from .harness import FAST_TIMINGS, Stack

pytestmark = pytest.mark.e2e

FAULT_TIMINGS = {"MESSAGING_MAX_RETRIES": "6"}


def stack_env(env_fixture: str | None = None, *, process_env: dict | None = None, **env: str):
    """Run the decorated test's stack with `env` (and the dict fixture `env_fixture` returns),
    and `process_env` ({"worker": {...}, ...}) for one kind of process only."""

    def decorate(test):
        test.stack_env = (env, env_fixture, process_env or {})
        return test

    return decorate


@pytest.fixture
def stack(request, e2e_database_name, tmp_path_factory):
    stack = Stack(database_name=e2e_database_name, workdir=tmp_path_factory.mktemp("stack"))
    stack.env.update(FAULT_TIMINGS)
    env, env_fixture, process_env = getattr(request.function, "stack_env", ({}, None, {}))
    stack.env.update(env)
    stack.process_env.update(process_env)
    if env_fixture:
        stack.env.update(request.getfixturevalue(env_fixture))
    try:
        stack.start()
    except BaseException:
        stack.close()
        raise
    yield stack
    stack.close()


@pytest.fixture
def apps_():
    """The apps a test starts, stopped at teardown (before the tables are truncated)."""
    started: list[App] = []
    yield started
    for app in started:
        app.stop()


def _undelivered(ids: list[str]) -> int:
    return Message.objects.filter(pk__in=ids).exclude(status__in=DELIVERED).count()


def wait_all_delivered(stack: Stack, ids: list[str], *, timeout: float) -> None:
    stack.wait(
        lambda: _undelivered(ids) == 0,
        timeout=timeout,
        what=f"{len(ids)} messages to be delivered",
    )


# --- 1. the web process SIGKILLed ---------------------------------------------------------


def test_web_killed_with_clients_connected_they_reconnect_and_nothing_accepted_is_lost(e2e, apps_):
    stack = e2e.stack
    sender = e2e.sender()
    mobiles = [e2e.mobile() for _ in range(3)]
    apps_ += [App(stack, m.token) for m in mobiles]
    for app in apps_:
        app.wait_connected()
    senders = [Sender(sender.api, m.user.phone_number, interval=0.1).start() for m in mobiles]
    for app in apps_:
        stack.wait(lambda app=app: len(app.message_ids()) >= 3, timeout=20, what="deliveries before the kill")

    stack.kill_web()  # the supervisor and both daphne processes, at once: no disconnect() runs
    killed_at = time.monotonic()
    time.sleep(1)
    stack.start_web()
    restarted_in = time.monotonic() - killed_at
    for app in apps_:
        stack.wait(lambda app=app: len(app.sockets) >= 2, timeout=20, what="the app to reconnect")
        app.wait_connected()
    reconnected_in = time.monotonic() - killed_at
    time.sleep(2)  # more load on the new processes
    ids = [pk for s in senders for pk in s.stop()]
    refused = sum(s.refused for s in senders)

    for app, s in zip(apps_, senders, strict=True):
        app.wait_for_all(s.accepted, timeout=40)
    wait_all_delivered(stack, ids, timeout=30)
    result = figures(
        "web_sigkill",
        ids,
        apps_,
        refused=refused,
        committed_unanswered=sum(len(a.message_ids()) for a in apps_) - len(ids),
        restarted_in=restarted_in,
        reconnected_in=reconnected_in,
    )
    assert result["lost"] == 0
    assert result["duplicated_to_app"] == 0
    assert not Message.objects.filter(pk__in=ids, status=Status.FAILED).exists()
    for app, s in zip(apps_, senders, strict=True):
        # Each recipient's seqs 1..N without a gap. N may exceed the 202s: a send committed
        # just before the kill, whose answer died with the process, is delivered too.
        seqs = sorted({a.seq for a in app.arrivals()})
        assert seqs == list(range(1, len(seqs) + 1))
        assert len(seqs) >= len(s.accepted)


# --- 2. Redis restarted under load --------------------------------------------------------

# Well under the 30 s ack timeout: a frame lost in the restart and left to that timeout fails it.
MAX_LATENCY_AFTER_REDIS_SECONDS = 10.0


@stack_env(MESSAGING_ACK_TIMEOUT_SECONDS="30")
def test_redis_restarted_under_load_no_frame_waits_for_the_ack_timeout(e2e, apps_):
    stack = e2e.stack
    sender, mobile = e2e.sender(), e2e.mobile()
    app = App(stack, mobile.token)
    apps_.append(app)
    app.wait_connected()
    load = Sender(sender.api, mobile.user.phone_number, interval=0.05).start()
    stack.wait(lambda: len(app.message_ids()) >= 10, timeout=20, what="deliveries before the restart")

    stack.stop_redis()  # broker, channel layer, presence and the relay's wake-ups, all at once
    time.sleep(1)
    stack.start_redis()  # empty: presence and channel-layer subscriptions are gone
    back_at = time.time()
    time.sleep(4)
    ids = load.stop()

    app.wait_for_all(ids, timeout=25)
    wait_all_delivered(stack, ids, timeout=25)
    # Latency of each message after Redis is back: from its 202 (or from the restart, for the
    # ones accepted earlier but not delivered by then) to its first frame at the app.
    first_at: dict[str, float] = {}
    for arrival in app.arrivals():
        first_at.setdefault(arrival.message_id, arrival.at)
    latencies = [first_at[pk] - max(load.accepted[pk], back_at) for pk in ids if first_at[pk] >= back_at]
    worst = max(latencies)
    result = figures(
        "redis_restart",
        ids,
        [app],
        refused=load.refused,
        after_restart=len(latencies),
        worst_latency_after_restart=worst,
        reconnects=len(app.sockets) - 1,
    )
    assert result["lost"] == 0
    assert result["duplicated_to_app"] == 0
    assert latencies, "some messages must have been delivered after the restart"
    assert worst < MAX_LATENCY_AFTER_REDIS_SECONDS, worst
    assert all(p.alive() for p in (stack.web, stack.worker, stack.beat))
    # Alive is not enough: a worker that hit kombu's lost-channel flaw stays up, consuming nothing.
    assert "Unrecoverable error" not in stack.worker.log_text()


# --- 3. a poison message ------------------------------------------------------------------


def _image(sender) -> Media:
    """An uploaded image of `sender`, ready, as media_upload leaves one (no thumbnails yet)."""
    pk = uuid.uuid4()
    return Media.objects.create(
        id=pk,
        sender=sender.user,
        media_type=MediaType.IMAGE,
        content_type="image/png",
        size=1234,
        file_name="photo.png",
        storage_key=f"media/fault/{pk}.png",
        status=MediaStatus.READY,
    )


def _poison(media: Media) -> None:
    """Corrupt `media` as a buggy (or older) thumbnailer could: a thumbnail key without extension.

    Every frame that carries it then fails to encode (no content type for its format).
    """
    Media.objects.filter(pk=media.pk).update(thumbnail_small_key=f"media/fault/{media.pk}-150")


def test_poison_message_is_dead_lettered_and_does_not_block_the_recipients_others(e2e, apps_):
    stack = e2e.stack
    sender, mobile = e2e.sender(), e2e.mobile()

    # The worker's path: frames written, never acked, so the ack timeout retries them; the
    # attachment goes bad in between, and the retry must encode the others without it.
    socket = e2e.connect(mobile, acking=False)
    first = e2e.send(sender, mobile, "before")["id"]
    poisoned = e2e.send(sender, mobile, "with a photo", attachment_ids=[str(_image(sender).pk)])["id"]
    last = e2e.send(sender, mobile, "after")["id"]
    socket.wait_for(lambda s: len(s.message_ids()) == 3, timeout=20, what="the three frames")
    _poison(Media.objects.get(message_id=poisoned))
    stack.wait(
        lambda: Message.objects.get(pk=poisoned).status == Status.FAILED,
        timeout=20,
        what="the poison message to be dead-lettered by the worker",
    )
    socket.wait_for(
        lambda s: sum(1 for m in s.messages() if m["id"] in (first, last)) >= 4,
        timeout=20,
        what="the retry of the two others",
    )
    socket.ack([first, last])
    socket.close()
    wait_all_delivered(stack, [first, last], timeout=20)

    # The web's path: a reconnecting socket's catch-up, with the poison among what it claims.
    offline = [e2e.send(sender, mobile, "offline 1")["id"]]
    offline_poisoned = e2e.send(sender, mobile, "offline photo", attachment_ids=[str(_image(sender).pk)])[
        "id"
    ]
    offline.append(e2e.send(sender, mobile, "offline 2")["id"])
    stack.wait(
        lambda: (
            set(Message.objects.filter(pk__in=[*offline, offline_poisoned]).values_list("status", flat=True))
            == {Status.PENDING}
        ),
        timeout=20,
        what="the offline messages to be pending",
    )
    _poison(Media.objects.get(message_id=offline_poisoned))
    app = App(stack, mobile.token)
    apps_.append(app)
    app.wait_connected()
    app.wait_for_all(offline, timeout=20)
    wait_all_delivered(stack, offline, timeout=20)
    assert Message.objects.get(pk=offline_poisoned).status == Status.FAILED
    assert app.sockets[0].stays_open(1), "the catch-up must not crash the socket"
    assert offline_poisoned not in app.message_ids()

    letters = {str(d.message_id): d.reason for d in DeadLetter.objects.all()}
    assert set(letters) == {poisoned, offline_poisoned}
    assert all(reason.startswith("frame encoding failed") for reason in letters.values()), letters
    ids = [first, last, *offline]
    result = figures(
        "poison_message",
        ids,
        [Recorded(stack, [socket, *app.sockets])],
        dead_lettered=len(letters),
        retried_poison=Message.objects.get(pk=poisoned).retry_count,
    )
    assert result["lost"] == 0
    assert result["duplicated_to_app"] == 0


# --- 7. two beats at once -----------------------------------------------------------------


def test_two_beats_two_relays_deliver_each_message_once(e2e, apps_):
    stack = e2e.stack
    second = stack.start_extra_beat()
    sender = e2e.sender()
    mobiles = [e2e.mobile() for _ in range(2)]
    apps_ += [App(stack, m.token) for m in mobiles]
    for app in apps_:
        app.wait_connected()
    senders = [Sender(sender.api, m.user.phone_number, interval=0.03).start() for m in mobiles]
    time.sleep(8)
    ids = [pk for s in senders for pk in s.stop()]
    for app, s in zip(apps_, senders, strict=True):
        app.wait_for_all(s.accepted, timeout=30)
    wait_all_delivered(stack, ids, timeout=20)
    time.sleep(2)  # a late duplicate (a second relay's publish) would arrive by now

    relays = [p.log_text().count("relay.published") for p in (stack.beat, second)]
    sweeps = [p.log_text().count("Sending due task") for p in (stack.beat, second)]
    result = figures("two_beats", ids, apps_, relay_rounds=relays, sweeps_sent=sweeps)
    assert result["lost"] == 0
    assert result["duplicated_to_app"] == 0
    # No socket dropped and every frame was acked at once: each id came exactly once.
    assert result["redelivered"] == 0
    assert all(len(app.sockets) == 1 for app in apps_)
    assert all(n > 0 for n in sweeps), "both beats are scheduling the sweeps"


# --- 4. push providers: FCM 503/429 with Retry-After, APNS 410 ----------------------------

FCM_RETRY_AFTER = (3, 2)  # seconds, in the provider's Retry-After of its 503 then its 429
ANDROID_TOKEN = "fault-android-token"
IOS_TOKEN = "a0" * 32


@pytest.fixture(scope="module")
def push_servers(tmp_path_factory):
    """The local FCM (HTTP) and APNS (HTTP/2, TLS) servers of tests/devices, for the worker."""
    pki = make_pki(tmp_path_factory.mktemp("push-pki"))
    fcm = FakeFcm(pki.google_public_pem).start()
    apns = FakeApns(
        cert_file=pki.server_cert_file,
        key_file=pki.server_key_file,
        auth_public_pem=pki.apns_public_pem,
        team_id=APNS_TEAM_ID,
        key_id=APNS_KEY_ID,
    ).start()
    account = pki.service_account_file(tmp_path_factory.mktemp("fcm"), f"{fcm.url}/token")
    yield pki, fcm, apns, account
    fcm.stop()
    apns.stop()


@pytest.fixture
def push_env(push_servers) -> dict[str, str]:
    """Environment that points the worker's real firebase-admin and aioapns at the local servers."""
    pki, fcm, apns, account = push_servers
    fcm.reset()
    apns.reset()
    return {
        "PUSH_BACKEND": "live",
        "FCM_CREDENTIALS_FILE": str(account),
        "FCM_ENDPOINT_URL": fcm.url,
        "APNS_KEY_FILE": str(pki.apns_key_file),
        "APNS_KEY_ID": APNS_KEY_ID,
        "APNS_TEAM_ID": APNS_TEAM_ID,
        "APNS_TOPIC": APNS_TOPIC,
        "APNS_ENDPOINT": apns.endpoint,
        "APNS_CA_FILE": str(pki.ca_file),
        "PUSH_SEND_TIMEOUT_SECONDS": "5",
    }


@stack_env("push_env")
def test_push_provider_errors_retry_after_is_honoured_and_410_deactivates_the_token(e2e, apps_, push_servers):
    _pki, fcm, apns, _account = push_servers
    stack = e2e.stack
    sender, mobile = e2e.sender(), e2e.mobile()
    for token, platform in ((ANDROID_TOKEN, "android"), (IOS_TOKEN, "ios")):
        response = e2e.api.as_(mobile.token).post("/api/v1/devices/", {"token": token, "platform": platform})
        assert response.status == 201, response.body
    fcm.answer(
        ANDROID_TOKEN,
        FcmReply("UNAVAILABLE", "", "The service is unavailable.", retry_after=str(FCM_RETRY_AFTER[0])),
        FcmReply(
            "RESOURCE_EXHAUSTED", "QUOTA_EXCEEDED", "Quota exceeded.", retry_after=str(FCM_RETRY_AFTER[1])
        ),
    )
    apns.answer(IOS_TOKEN, ApnsReply(410, "Unregistered"))

    message_id = e2e.send(sender, mobile, "wake up")["id"]  # the recipient is offline
    stack.wait(lambda: len(fcm.to(ANDROID_TOKEN)) == 3, timeout=30, what="the FCM send and its two retries")
    stack.wait(
        lambda: not DeviceToken.objects.get(token=IOS_TOKEN).is_active,
        timeout=10,
        what="the APNS 410 token to be deactivated",
    )
    tries = [r.at for r in fcm.to(ANDROID_TOKEN)]
    waits = [later - earlier for earlier, later in itertools.pairwise(tries)]
    time.sleep(1)  # a retry sent too early, or a fourth one, would show by now
    assert len(fcm.to(ANDROID_TOKEN)) == 3
    assert all(w >= ra for w, ra in zip(waits, FCM_RETRY_AFTER, strict=True)), waits
    android, ios = DeviceToken.objects.get(token=ANDROID_TOKEN), DeviceToken.objects.get(token=IOS_TOKEN)
    assert (android.is_active, android.consecutive_failures, android.last_error) == (True, 0, "")
    assert ios.is_active is False and "Unregistered" in ios.last_error
    assert len(apns.to(IOS_TOKEN)) == 1  # a deactivated token is never tried again
    assert Message.objects.get(pk=message_id).status == Status.PENDING  # a push is no delivery

    app = App(stack, mobile.token)  # the woken app connects and acks
    apps_.append(app)
    app.wait_for_all([message_id], timeout=20)
    wait_all_delivered(stack, [message_id], timeout=20)
    result = figures(
        "push_provider_errors",
        [message_id],
        [app],
        fcm_tries=len(tries),
        fcm_waits="/".join(f"{w:.2f}s" for w in waits),
        retry_after="/".join(f"{ra}s" for ra in FCM_RETRY_AFTER),
        apns_410_deactivated=int(not ios.is_active),
    )
    assert result["lost"] == 0
    assert result["duplicated_to_app"] == 0


# --- 5. a socket that does not drain (the channel layer's "capacity") ---------------------

STALL_MESSAGES = 200
STALL_CONTENT_CHARS = 4000
STALL_SECONDS = 6.0


def _stalled_socket(stack: Stack, token: str) -> tuple[socket.socket, object]:
    """Open /ws/mobile/ and never read it: a tiny receive buffer and websockets' reading paused."""
    raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    raw.connect(("127.0.0.1", stack.web_port))
    conn = ws_connect(
        stack.ws_url,
        sock=raw,
        additional_headers={"Authorization": f"Token {token}"},
        max_queue=1,  # websockets stops reading from the socket beyond one buffered frame
        proxy=None,
        open_timeout=10,
    )
    return raw, conn


def _reset(raw: socket.socket) -> None:
    """Drop the connection as a killed app does: RST, no close handshake."""
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    raw.close()


def test_socket_that_does_not_read_loses_nothing_and_crashes_nothing(e2e, apps_):
    stack = e2e.stack
    sender, mobile = e2e.sender(), e2e.mobile()
    raw, _conn = _stalled_socket(stack, mobile.token)
    stack.wait(
        lambda: presence.is_online(Party.mobile(mobile.user.pk)),
        timeout=10,
        what="the stalled socket to be online",
    )

    body = {
        "messages": [
            {
                "recipient_phone_number": mobile.user.phone_number,
                "content": f"{n:04d} " + "x" * STALL_CONTENT_CHARS,
            }
            for n in range(STALL_MESSAGES)
        ]
    }
    response = sender.api.post("/api/v1/messages/batch/", body, timeout=30)
    assert response.status == 202, response.body
    ids = response.body["ids"]
    stalled_at = time.monotonic()
    # Everything is written towards the socket (kept by the web process, which the client does
    # not drain) and, unacked, retried by the ack timeout meanwhile.
    stack.wait(
        lambda: Message.objects.filter(pk__in=ids, retry_count__gte=1).count() == len(ids),
        timeout=20,
        what="the ack timeout to retry every unread message",
    )
    time.sleep(max(0.0, STALL_SECONDS - (time.monotonic() - stalled_at)))
    statuses_while_stalled = dict(
        Message.objects.filter(pk__in=ids).values_list("status").annotate(n=Count("pk")).order_by()
    )
    retries_while_stalled = max(Message.objects.filter(pk__in=ids).values_list("retry_count", flat=True))
    _reset(raw)

    app = App(stack, mobile.token)  # the app comes back: catch-up delivers what waited
    apps_.append(app)
    app.wait_for_all(ids, timeout=40)
    wait_all_delivered(stack, ids, timeout=20)
    result = figures(
        "socket_not_reading",
        ids,
        [app],
        stalled=STALL_SECONDS,
        bytes_held=STALL_MESSAGES * STALL_CONTENT_CHARS,
        max_retries_while_stalled=retries_while_stalled,
        statuses_while_stalled="/".join(f"{k}:{v}" for k, v in sorted(statuses_while_stalled.items())),
    )
    assert result["lost"] == 0
    assert result["duplicated_to_app"] == 0
    assert not Message.objects.filter(pk__in=ids, status=Status.FAILED).exists()
    assert all(p.alive() for p in (stack.web, stack.worker, stack.beat))
    assert "starting another" not in stack.web.log_text(), "no daphne process died"
    assert "Traceback" not in stack.web.log_text()


# --- 6. clock skew of 5 minutes between the processes -------------------------------------

SKEW_SECONDS = 300
SHORT_TTL = 3  # seconds: expires only if the clock that judges it runs with the one that set it
ACK_TIMEOUT = float(FAST_TIMINGS["MESSAGING_ACK_TIMEOUT_SECONDS"])


@stack_env(
    MESSAGING_EXPIRY_SWEEP_SECONDS="1",
    process_env={
        "worker": {"MESSAGING_CLOCK_OFFSET_SECONDS": str(SKEW_SECONDS)},
        "beat": {"MESSAGING_CLOCK_OFFSET_SECONDS": str(-SKEW_SECONDS)},
    },
)
def test_clock_skew_between_web_worker_and_beat_fails_nothing_early_and_leaves_nothing_stuck(e2e, apps_):
    """The web's clock is right, the worker's 5 minutes ahead, beat's (the relay) 5 behind."""
    stack = e2e.stack
    sender = e2e.sender()
    online, unacking, offline = e2e.mobile(), e2e.mobile(), e2e.mobile()
    app = App(stack, online.token)
    apps_.append(app)
    app.wait_connected()

    # Live delivery: the web stamps due times and a 60 s TTL, beat's relay claims, the worker
    # judges expiry and presence (the web's heartbeats): a TTL shorter than the skew survives.
    live = Sender(sender.api, online.user.phone_number, interval=0.1).start()
    ttl_live = [e2e.send(sender, online, f"ttl {n}", ttl_seconds=60)["id"] for n in range(5)]
    # TTL that must expire: 3 s for a recipient who stays offline.
    expiring = e2e.send(sender, offline, "expires", ttl_seconds=SHORT_TTL)
    # Ack timeouts and retries: the web's catch-up stamps the ack deadline, the worker's sweep
    # compares it; the socket never acks.
    pending = [e2e.send(sender, unacking, f"unacked {n}", ttl_seconds=120)["id"] for n in range(3)]
    stack.wait(
        lambda: Message.objects.filter(pk__in=pending, status=Status.PENDING).count() == 3,
        timeout=20,
        what="the unacking recipient's messages to be pending",
    )
    silent = e2e.connect(unacking, acking=False)
    connected_at = time.time()
    silent.wait_for(lambda s: len(s.message_ids()) == 3, timeout=20, what="the catch-up")
    stack.wait(
        lambda: Message.objects.filter(pk__in=pending, retry_count__gte=1).count() == 3,
        timeout=20,
        what="the ack timeout to retry the unacked messages",
    )
    first_timeouts = [
        a.at.timestamp()
        for a in DeliveryAttempt.objects.filter(message_id__in=pending, outcome=Outcome.TIMEOUT).order_by(
            "at"
        )
    ]
    timed_out_after = [m.retry_count for m in Message.objects.filter(pk__in=pending)]
    retried_in = time.time() - connected_at
    silent.ack(pending)
    time.sleep(2)
    ids = live.stop() + ttl_live

    app.wait_for_all(ids, timeout=30)
    wait_all_delivered(stack, [*ids, *pending], timeout=20)
    expired = e2e.wait_status(sender, [expiring["id"]], "failed", timeout=20)[0]
    expired_after = (
        datetime.fromisoformat(expired["failed_at"]) - datetime.fromisoformat(expired["created_at"])
    ).total_seconds()
    early = Message.objects.filter(pk__in=[*ids, *pending], status=Status.FAILED).count()
    result = figures(
        "clock_skew",
        ids,
        [app],
        skew=f"web 0/worker +{SKEW_SECONDS}s/beat -{SKEW_SECONDS}s",
        failed_early=early,
        ttl_expired_after=expired_after,
        unacked_retried_in=retried_in,
        retries=max(timed_out_after),
    )
    assert result["lost"] == 0
    assert result["duplicated_to_app"] == 0
    assert early == 0
    assert expired["failure_reason"] == "expired"
    assert SHORT_TTL <= expired_after < SHORT_TTL + 5, expired_after
    # Each ack timeout came after the timeout (not at once) and within seconds (not 5 minutes).
    assert first_timeouts
    assert ACK_TIMEOUT <= retried_in < ACK_TIMEOUT + 8, retried_in
