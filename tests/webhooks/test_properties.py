"""Property: any interleaving of record / claim-and-die / attempt / sweep / receiver outages, with a
moving clock, never sends an event again after a success and, once the receiver is back, loses none.

Run against the real services, database and a real local receiver (200, 500 or not listening).
"""

from __future__ import annotations

from collections import Counter
from datetime import timedelta

from django.db import transaction
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from apps.messaging import lifecycle
from apps.messaging.models import Message, Status
from apps.webhooks import delivery
from apps.webhooks.models import EventStatus, WebhookEvent
from tests.factories import MessageFactory

from .conftest import endpoint_for

operations = st.lists(
    st.one_of(
        st.just(("record", None)),
        st.just(("lane", None)),
        st.just(("sweep", None)),
        st.just(("claim_and_die", None)),
        st.tuples(st.just("receiver"), st.sampled_from(["up", "500", "stopped"])),
        st.tuples(st.just("advance"), st.sampled_from([1, 7, 60, 700, 4000])),
    ),
    max_size=25,
)


def _run_due_lanes(now) -> None:
    """What the beat sweep and the tasks it enqueues do, in this thread."""
    for endpoint_id in delivery.due_endpoint_ids(now=now):
        delivery.lane_run(endpoint_id=endpoint_id, now=now)


@hypothesis_settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=operations)
def test_no_event_is_sent_again_after_success_and_none_is_lost(
    ops, sender, mobile_user, receiver, now, settings
):
    settings.WEBHOOK_MAX_ATTEMPTS = 100  # out of reach here: give-up is tested on its own
    if receiver._server is None:
        receiver.start()
    receiver.script = lambda n, request: 200
    clock = now
    with transaction.atomic():
        endpoint = endpoint_for(sender, receiver.url, events=["message.sent"])
        first_request = len(receiver.requests)

        def successes() -> Counter:
            ids = {str(e) for e in WebhookEvent.objects.values_list("event_id", flat=True)}
            return Counter(i for i in receiver.successful_ids() if i in ids)

        for op, arg in ops:
            if op == "record":
                message = MessageFactory(sender=sender, recipient=mobile_user)
                lifecycle.transition(Message.objects.filter(pk=message.pk), to=Status.SENT, now=clock)
            elif op == "lane":
                delivery.lane_run(endpoint_id=endpoint.pk, now=clock)
            elif op == "sweep":
                _run_due_lanes(clock)
            elif op == "claim_and_die":
                delivery._claim(endpoint.pk, clock, clock + timedelta(seconds=delivery.lease_seconds()))
            elif op == "receiver":
                if arg == "stopped":
                    receiver.stop()
                else:
                    if receiver._server is None:
                        receiver.start()
                    receiver.script = (lambda n, r: 200) if arg == "up" else (lambda n, r: 500)
            elif op == "advance":
                clock += timedelta(seconds=arg)

            # Never sent again after a success: the delivered ones leave the outbox for good.
            counts = successes()
            assert all(n == 1 for n in counts.values()), (op, arg, counts)
            delivered = set(
                str(e)
                for e in WebhookEvent.objects.filter(status=EventStatus.DELIVERED).values_list(
                    "event_id", flat=True
                )
            )
            assert delivered == set(counts), (op, arg)

        # The receiver comes back for good: within a few hours every event arrives, once.
        if receiver._server is None:
            receiver.start()
        receiver.script = lambda n, request: 200
        for _ in range(6):
            clock += timedelta(seconds=settings.WEBHOOK_RETRY_MAX_SECONDS + delivery.lease_seconds() + 1)
            _run_due_lanes(clock)
        events = list(WebhookEvent.objects.values_list("event_id", "status"))
        assert all(status == EventStatus.DELIVERED for _, status in events)
        assert successes() == Counter({str(e): 1 for e, _ in events})
        # Every copy of an event sent was the same bytes: the payload is fixed at recording.
        bodies: dict[str, set[bytes]] = {}
        for request in receiver.requests[first_request:]:
            bodies.setdefault(request.webhook_id, set()).add(request.body)
        assert all(len(b) == 1 for b in bodies.values())
        transaction.set_rollback(True)
