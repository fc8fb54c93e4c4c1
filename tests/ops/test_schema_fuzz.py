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

And as a new user would: the `st` command line against a live server (the repository's
schemathesis.toml, all four phases, stateful included, following the schema's links), once as a
sender on the operations tagged `senders` and once as a mobile user on those tagged
`mobile-users`: no failure, and no warning (operations it could never reach past 401/403/404,
schemas that disagree with validation), which is what the schema's tags, links and examples
(apps/ops/schema.py) are for.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

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
from apps.ops.schema import EXAMPLE_PHONE
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
    # A batch holds 1 to 1,000 messages; a device's PATCH needs is_active (and a body).
    batch = components["MessageBatchRequest"]["properties"]["messages"]
    assert (batch["minItems"], batch["maxItems"]) == (1, 1000)
    patch = paths["/api/v1/devices/{device_id}/"]["patch"]["requestBody"]
    assert patch["required"] is True
    assert patch["content"]["application/json"]["schema"]["required"] == ["is_active"]
    # Quiet hours are local times of day: no RFC 3339 offset is promised.
    assert "format" not in components["PatchedPreferencesRequest"]["properties"]["quiet_hours_start"]
    # What validation refuses is documented: blank content, an empty event list, NUL characters.
    one_way = components["OneWayMessageInputRequest"]["properties"]
    assert one_way["content"]["minLength"] == 1
    assert "\x00" not in one_way["content"]["pattern"] and "u0000" in one_way["content"]["pattern"]
    assert components["WebhookEndpointCreateRequest"]["properties"]["events"]["minItems"] == 1
    # JSON is the one request body, but for uploads.
    for path, item in paths.items():
        for method, operation in item.items():
            content = operation.get("requestBody", {}).get("content", {})
            if content:
                expected = ["multipart/form-data"] if path == "/api/v1/media/" else ["application/json"]
                assert list(content) == expected, (method, path, list(content))
    # Every operation is tagged with the callers it serves, and ids flow by links.
    tags = {(m, p): tuple(op["tags"]) for p, item in paths.items() for m, op in item.items()}
    assert tags[("post", "/api/v1/messages/")] == ("senders",)
    assert tags[("get", "/api/v1/devices/")] == ("mobile-users",)
    assert tags[("get", "/api/v1/conversations/")] == ("senders", "mobile-users")
    assert tags[("post", "/api/v1/conversations/")] == ("senders",)
    links = paths["/api/v1/messages/"]["post"]["responses"]["202"]["links"]
    assert links["v1_messages_retrieve"]["parameters"] == {"message_id": "$response.body#/id"}


def test_every_path_id_has_a_link_from_an_operation_that_produces_it():
    """A new route naming an id no operation links to fails here (add it to ID_SOURCES)."""
    from drf_spectacular.generators import SchemaGenerator

    schema = SchemaGenerator().get_schema(request=None, public=True)
    linked = {
        link["operationId"]
        for item in schema["paths"].values()
        for op in item.values()
        for response in op.get("responses", {}).values()
        for link in response.get("links", {}).values()
    }
    unlinked = [
        op["operationId"]
        for path, item in schema["paths"].items()
        for op in item.values()
        if path.startswith("/api/v1/") and "{" in path and op["operationId"] not in linked
    ]
    assert not unlinked, f"operations whose path ids no link provides: {unlinked}"


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


# --- the command line, as a new user runs it ------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]
CLI_EXAMPLES = int(os.environ.get("SCHEMA_FUZZ_CLI_EXAMPLES", "10"))
CLI_SEED = 20261207  # a fixed seed: the same cases every run (warnings are judged on them)


def _dead_letter(sender, pk: int) -> int:
    """Dead-letter a message of `sender`; give the letter id `pk`, far from the ids a fuzzer
    tries first (0, 1, 2...), which a bulk requeue of small ids would otherwise consume."""
    message = services.message_send(sender=sender, recipient_phone_number=EXAMPLE_PHONE, content="x")
    services.messages_fail(Message.objects.filter(pk=message.pk), reason="test")
    DeadLetter.objects.filter(message=message).update(id=pk)
    return pk


def _st(config: Path, url: str, token: str, tag: str, *extra: str) -> tuple[int, str]:
    report = os.environ.get("SCHEMA_FUZZ_CLI_REPORT_DIR")  # keep what it sent (NDJSON), to debug
    extra = (*extra, "--report", "ndjson", "--report-dir", f"{report}/{tag}") if report else extra
    command = [
        str(Path(sys.executable).parent / "st"),
        "--config-file",
        str(config),
        "run",
        f"{url}/api/schema/",
        "-H",
        f"Authorization: Token {token}",
        "--include-tag",
        tag,
        "--seed",
        str(CLI_SEED),
        "--workers",
        "1",
        "--no-color",
        *extra,
    ]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, cwd=REPO_ROOT)
    return done.returncode, done.stdout + done.stderr


def _config(tmp_path: Path, caller: str, common: str, conversation, to_close) -> Path:
    """The repository's config, with the ids this test made (as schemathesis asks for data that no
    operation creates) and, for closing and archiving, a conversation other than the one the
    rest of the run writes into."""
    path = tmp_path / f"schemathesis-{caller}.toml"
    path.write_text(
        (REPO_ROOT / "schemathesis.toml").read_text()
        + common
        + f"""
[dictionaries.conversations]
values = ["{conversation.pk}"]

[dictionaries.conversations_to_close]
values = ["{to_close.pk}"]

[[operations]]
include-path-regex = '[{{]conversation_id[}}]/(messages/|read/)?$'
parameters = {{ "path.conversation_id" = {{ dictionary = "conversations", probability = 0.8 }} }}

[[operations]]
include-path-regex = '[{{]conversation_id[}}]/(archive|close)/$'
parameters = {{ "path.conversation_id" = {{ dictionary = "conversations_to_close", probability = 0.8 }} }}
"""
    )
    return path


def test_the_schemathesis_command_line_finds_no_failure_and_warns_of_nothing(
    live_server, settings, tmp_path, redis
):
    settings.MEDIA_ROOT = str(tmp_path / "media")
    settings.MEDIA_UPLOADS_PER_MINUTE = 10_000  # the fuzzer uploads far more than 10 a minute
    permissions = ["send_message", "send_broadcast", "chat", "manage_dead_letters"]
    sender, other_sender = SenderFactory(permissions=permissions), SenderFactory(permissions=permissions)
    mobile = MobileUserFactory(phone_number=EXAMPLE_PHONE)  # the user the schema's examples name
    conversation = ConversationFactory(business=sender, mobile=mobile)
    endpoint = endpoint_create(owner=sender, url="https://hooks.example.com/cli", events=["message.sent"])
    event = WebhookEvent.objects.create(
        endpoint=endpoint, type="message.sent", payload={}, created_at=timezone.now(), status="given_up"
    )
    delivery = WebhookDelivery.objects.create(
        event=event, endpoint=endpoint, attempt=1, outcome="gave_up", at=timezone.now()
    )
    # Objects nothing in the API creates (dead letters, delivery attempts) are made here and
    # named in the config, as schemathesis asks; one dead letter per operation that consumes it.
    letters = {
        name: _dead_letter(sender, 900_001 + n)
        for n, name in enumerate(("GET", "DELETE", "POST /api/v1/dead-letters/{dead_letter_id}/requeue/"))
    }
    bulk = _dead_letter(sender, 900_000)
    common = f"""
[generation]
max-examples = {CLI_EXAMPLES}

[[operations]]
include-name = "POST /api/v1/webhooks/{{endpoint_id}}/deliveries/{{delivery_id}}/redeliver/"
parameters = {{ endpoint_id = {endpoint.pk}, delivery_id = {delivery.pk} }}

[[operations]]
include-name = "GET /api/v1/dead-letters/{{dead_letter_id}}/"
parameters = {{ dead_letter_id = {letters["GET"]} }}

[[operations]]
include-name = "DELETE /api/v1/dead-letters/{{dead_letter_id}}/"
parameters = {{ dead_letter_id = {letters["DELETE"]} }}

[[operations]]
include-name = "POST /api/v1/dead-letters/{{dead_letter_id}}/requeue/"
parameters = {{ dead_letter_id = {letters["POST /api/v1/dead-letters/{dead_letter_id}/requeue/"]} }}

[dictionaries.dead_letters]
values = [{bulk}]

[[operations]]
include-name = "POST /api/v1/dead-letters/requeue/"
parameters = {{ "body.ids[*]" = {{ dictionary = "dead_letters", probability = 1.0 }} }}
"""
    runs = {
        # Its erasure (DELETE mobile/me/) would revoke the token mid-run: the in-process test
        # above fuzzes it, last.
        "mobile": (
            token_create(owner=mobile),
            "mobile-users",
            ConversationFactory(business=other_sender, mobile=mobile),
            ("--exclude-name", "DELETE /api/v1/mobile/me/"),
        ),
        "sender": (token_create(owner=sender), "senders", ConversationFactory(business=sender), ()),
    }
    problems = []
    for caller, (token, tag, to_close, extra) in runs.items():
        config = _config(tmp_path, caller, common, conversation, to_close)
        code, output = _st(config, live_server.url, token, tag, *extra)
        cases = re.search(r"(\d+) generated, (\d+) passed", output)
        warned = _warnings(output)
        mismatched = warned.pop("Schema validation mismatch", [])
        print(
            f"\nHOSTILE schemathesis_cli_{caller}: exit={code} "
            f"cases={cases.group(1) if cases else '?'} passed={cases.group(2) if cases else '?'} "
            f"warnings={sum(map(len, warned.values()))} validation_mismatch={len(mismatched)} "
            + " ".join(f"[{op}]" for op in mismatched)
        )
        if code != 0 or warned or cases is None or cases.group(1) != cases.group(2):
            problems.append(f"--- {caller} (exit {code}) ---\n{warned or output[-4000:]}")
    assert not problems, "\n".join(problems)


def _warnings(output: str) -> dict[str, list[str]]:
    """Return the CLI's warnings, {kind: [operations]}, from its WARNINGS section."""
    section = output.split("== WARNINGS ==", 1)[1].split("\n=", 1)[0] if "== WARNINGS ==" in output else ""
    found: dict[str, list[str]] = {}
    kind = None
    for line in section.splitlines():
        if re.match(r"^[A-Z][^:]+:", line):
            kind = line.split(":", 1)[0]
            found[kind] = []
        elif kind and re.match(r"^\s+- [A-Z]+ /", line):
            found[kind].append(line.strip()[2:])
    return found
