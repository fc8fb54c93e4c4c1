"""Schema-driven fuzzing of the REST API (schemathesis) and the schema's own validity.

schemathesis reads `/api/schema/` from the live WSGI application (Django's own handler, in this
process, on the real test database and Redis) and sends every `/api/v1/` operation generated
requests, valid ones and deliberately invalid ones, as a sender and as a mobile user; the
`not_a_server_error` check fails on any 5xx. Path ids are half the time random, half the time
the caller's own objects (and phone numbers a real mobile user's), so that the views' bodies
are fuzzed past the 404. Bounded: a few
examples per operation, mode and caller, the whole test well under 90 s on a loaded machine.
`manage.py spectacular --validate --fail-on-warn` must stay clean too: an operation whose
documented request or response disagrees with what the view does fails there or here.
"""

from __future__ import annotations

import io
import json
import os
import time
import uuid

import pytest
import schemathesis
from django.core.files.uploadedfile import SimpleUploadedFile
from django.core.management import call_command
from django.core.wsgi import get_wsgi_application
from django.utils import timezone
from hypothesis import HealthCheck, Phase, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from PIL import Image
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

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

# SCHEMA_FUZZ_EXAMPLES=100 for a deeper, randomized hunt (then without the time budget).
EXAMPLES_PER_OPERATION = int(os.environ.get("SCHEMA_FUZZ_EXAMPLES", "6"))
DEEP = "SCHEMA_FUZZ_EXAMPLES" in os.environ
# No 5xx; and a body of a documented status is what the schema says it is. (Error statuses
# are not all documented per operation: status_code_conformance would only ask for that.)
CHECKS = [not_a_server_error, response_schema_conformance]
BUDGET_SECONDS = 90


def test_the_schema_validates_without_warnings_and_tells_the_truth(tmp_path):
    out = tmp_path / "schema.json"
    call_command(
        "spectacular", "--validate", "--fail-on-warn", "--format", "openapi-json", "--file", str(out)
    )
    schema = json.loads(out.read_text())
    paths, components = schema["paths"], schema["components"]["schemas"]

    def ok_body(path: str, method: str) -> dict:
        return paths[path][method]["responses"]["200"]["content"]["application/json"]["schema"]

    # Page-paginated lists answer the envelope, not a bare array.
    for path in ("/api/v1/messages/", "/api/v1/dead-letters/", "/api/v1/devices/", "/api/v1/conversations/"):
        ref = ok_body(path, "get")["$ref"].rsplit("/", 1)[-1]
        assert set(components[ref]["properties"]) == {"count", "next", "previous", "results"}, path
        assert {"page", "page_size"} <= {p["name"] for p in paths[path]["get"]["parameters"]}, path
    # A batch holds 1 to 1,000 messages; a device's PATCH needs is_active.
    batch = components["MessageBatch"]["properties"]["messages"]
    assert (batch["minItems"], batch["maxItems"]) == (1, 1000)
    patch = paths["/api/v1/devices/{device_id}/"]["patch"]["requestBody"]["content"]["application/json"]
    assert patch["schema"]["required"] == ["is_active"]
    # Quiet hours are local times of day: no RFC 3339 offset is promised.
    assert "format" not in components["Preferences"]["properties"]["quiet_hours_start"]


def _png(uploader) -> uuid.UUID:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(buffer, "PNG")
    return media_upload(
        uploader=uploader, upload=SimpleUploadedFile("a.png", buffer.getvalue(), content_type="image/png")
    ).pk


@pytest.fixture
def callers(settings, tmp_path, redis) -> dict[str, tuple[str, dict[str, str]]]:
    """Return caller -> (token, its own objects by URL kwarg)."""
    settings.MEDIA_ROOT = str(tmp_path)
    sender = SenderFactory(permissions=["send_message", "send_broadcast", "chat", "manage_dead_letters"])
    mobile = MobileUserFactory()
    conversation = ConversationFactory(business=sender, mobile=mobile)
    one_way = services.message_send(sender=sender, recipient_phone_number=mobile.phone_number, content="hi")
    conversation_message_send(conversation_id=conversation.pk, author=mobile, content="hello")
    failed = services.message_send(sender=sender, recipient_phone_number=mobile.phone_number, content="x")
    services.messages_fail(Message.objects.filter(pk=failed.pk), reason="test")
    device, _ = device_register(mobile_user=mobile, token="fuzz-device", platform="android")
    broadcast = services.broadcast_create(sender=sender, recipient_ids=[mobile.pk], content="all")
    endpoint = endpoint_create(owner=sender, url="https://hooks.example.com/fuzz", events=["message.sent"])
    now = timezone.now()
    event = WebhookEvent.objects.create(
        endpoint=endpoint, type="message.sent", payload={}, created_at=now, status="given_up"
    )
    delivery = WebhookDelivery.objects.create(
        event=event, endpoint=endpoint, attempt=1, outcome="gave_up", at=now
    )
    return {
        "sender": (
            token_create(owner=sender),
            {
                "message_id": str(one_way.pk),
                "conversation_id": str(conversation.pk),
                "media_id": str(_png(sender)),
                "dead_letter_id": str(DeadLetter.objects.get(message=failed).pk),
                "broadcast_id": str(broadcast.pk),
                "endpoint_id": str(endpoint.pk),
                "delivery_id": str(delivery.pk),
                "phone": mobile.phone_number,
            },
        ),
        "mobile": (
            token_create(owner=mobile),
            {
                "conversation_id": str(conversation.pk),
                "media_id": str(_png(mobile)),
                "device_id": str(device.pk),
                "phone": mobile.phone_number,
            },
        ),
    }


PHONE_FIELDS = ("recipient_phone_number", "mobile_phone_number")


def _with_known_phone(body: object, phone: str) -> object:
    """Return `body` naming a real mobile user wherever it names one, so sends get past 404."""
    if isinstance(body, dict):
        body = {
            key: phone if key in PHONE_FIELDS and isinstance(value, str) else _with_known_phone(value, phone)
            for key, value in body.items()
        }
        if isinstance(body.get("recipient_phone_numbers"), list):
            body["recipient_phone_numbers"] = [phone]
    elif isinstance(body, list):
        body = [_with_known_phone(item, phone) for item in body]
    return body


def _summary(exc: BaseExceptionGroup) -> str:
    """Return the failure's kind and the reproducing request, without the long schema dumps."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    kinds = [line for line in lines if line.startswith("- ") or " is not " in line or "required" in line]
    curl = [line for line in lines if line.startswith("curl ")]
    return f"{'; '.join(kinds)} {curl[:1]}"


def _fuzz(
    operation, mode, caller: str, headers: dict, own: dict, cases: dict, statuses: dict, failures: list
) -> None:
    """Send `operation` generated requests of `mode` as `caller`; record statuses and 5xx."""

    @hypothesis_settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        derandomize=not DEEP,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode), own_ids=st.booleans())
    def run(case, own_ids) -> None:
        if own_ids:
            for name in case.path_parameters or {}:
                if name in own:
                    case.path_parameters[name] = own[name]
            case.body = _with_known_phone(case.body, own["phone"])
        # Negative mode also mangles the documented Authorization header: 401s are no news.
        case.headers = {**(case.headers or {}), **headers}
        cases[caller] = cases.get(caller, 0) + 1
        response = case.call()
        statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
        try:
            case.validate_response(response, checks=CHECKS)
        except BaseExceptionGroup as exc:  # schemathesis's FailureGroup: reported at the end
            failures.append(f"{caller} {operation.label} -> {response.status_code}: {_summary(exc)}")

    run()


def test_no_generated_request_gets_a_server_error(callers):
    app = get_wsgi_application()
    started = time.monotonic()
    token = callers["sender"][0]
    schema = schemathesis.openapi.from_wsgi(
        "/api/schema/?format=json", app, headers={"Authorization": f"Token {token}"}
    ).include(path_regex="^/api/v1/")
    # The caller's erasure (DELETE mobile/me/) revokes its token: fuzzed last.
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()),
        key=lambda op: op.label == "DELETE /api/v1/mobile/me/",
    )
    assert len(operations) >= 25, len(operations)
    cases: dict[str, int] = {}
    statuses: dict[int, int] = {}
    failures: list[str] = []

    for caller, (token, own) in callers.items():
        for operation in operations:
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
                _fuzz(
                    operation,
                    mode,
                    caller,
                    {"Authorization": f"Token {token}"},
                    own,
                    cases,
                    statuses,
                    failures,
                )
    elapsed = time.monotonic() - started
    total = sum(cases.values())
    print(f"\nschemathesis: {total} cases {cases} in {elapsed:.1f} s; statuses {sorted(statuses.items())}")
    assert not failures, "\n".join(sorted(set(failures))[:60])
    assert total >= len(operations) * 2 * 2
    assert DEEP or elapsed < BUDGET_SECONDS
