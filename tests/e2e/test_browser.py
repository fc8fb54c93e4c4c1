"""The ops dashboard and the client simulator in a real browser (Debian's chromium, playwright's
Python API) against the real stack: daphne, Celery worker and beat.

Every wait is on a condition of the page or of the API, never a fixed sleep.
"""

from __future__ import annotations

import http.client
import os
from collections.abc import Iterator

import pytest

from apps.accounts.models import User
from apps.accounts.party import Party

from .conftest import E2E

pytestmark = pytest.mark.e2e

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
PAGE_TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def browser(shared_stack) -> Iterator[object]:
    """One chromium for the module, started after the stack (whose environment it must not touch)."""
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (requirements/dev.txt)"
    )
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(
            f"{CHROMIUM} is missing: scripts/ensure_tools.sh installs Debian's chromium when run as root"
        )
    # Playwright's sync API keeps an event loop running in this thread, and Django refuses ORM
    # calls while one runs; the test's own ORM calls (users, tokens, truncation) are synchronous.
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
        with sync_api.sync_playwright() as playwright:
            chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            yield chromium
            chromium.close()


@pytest.fixture
def page(request, browser, e2e: E2E):
    context = browser.new_context(base_url=e2e.stack.base_url, viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    # Offline: nothing may come from anywhere but the stack (no CDN, no font service).
    outside: list[str] = []

    def only_the_stack(route) -> None:
        if route.request.url.startswith((e2e.stack.base_url, "data:")):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_stack)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    call = getattr(request.node, "report_call", None)
    if call is not None and call.failed:
        shot = e2e.stack.workdir / f"{request.node.name}.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"screenshot of the page: {shot}")
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
    assert not outside, f"requests that left the stack: {outside}"


# --- the dashboard -----------------------------------------------------------------------


def test_dashboard_logs_in_through_the_admin_and_its_charts_move_with_the_traffic(page, e2e):
    password = "browser-test-password-1"
    User.objects.create_user(username="ops-staff", password=password, is_staff=True)
    sender, mobile = e2e.sender(), e2e.mobile()

    page.goto("/ops/")
    assert "/admin/login/" in page.url and "next=/ops/" in page.url
    page.fill("#id_username", "ops-staff")
    page.fill("#id_password", password)
    page.click("input[type=submit]")
    page.wait_for_url("**/ops/")
    page.wait_for_function("window.opsDashboard && window.opsDashboard.updates >= 1")
    # uPlot draws each chart on a canvas.
    assert page.locator(".chart canvas").count() >= 6
    assert page.locator("#breakers li").count() >= 1
    accepted_before = int(page.text_content("#total-accepted"))
    updates_before = page.evaluate("window.opsDashboard.updates")

    socket = e2e.connect(mobile, acking=True)
    ids = [e2e.send(sender, mobile, f"dashboard {i}")["id"] for i in range(5)]
    e2e.wait_status(sender, ids, "delivered")
    socket.wait_for(lambda s: len(s.message_ids()) == 5, timeout=10, what="five messages")

    # Live, without a reload: the totals, the rates chart's data and the latency follow.
    page.wait_for_function(
        f"Number(document.getElementById('total-accepted').textContent) >= {accepted_before + 5}"
    )
    page.wait_for_function(
        "window.opsDashboard.charts.throughput.data[1].some(function (v) { return v > 0; })"
        " && window.opsDashboard.charts.throughput.data[2].some(function (v) { return v > 0; })"
    )
    page.wait_for_function("window.opsDashboard.last.now.latency_ms.p99 !== null")
    assert page.evaluate("window.opsDashboard.updates") > updates_before
    assert page.url.endswith("/ops/")  # never reloaded or navigated
    assert int(page.text_content("#value-connections")) >= 1


def test_dashboard_sends_anonymous_browsers_to_the_login_form(e2e):
    # Unfollowed redirect, from the real daphne (tests/ops/test_dashboard.py covers non-staff).
    connection = http.client.HTTPConnection("127.0.0.1", e2e.stack.web_port, timeout=10)
    try:
        connection.request("GET", "/ops/")
        response = connection.getresponse()
        assert response.status == 302
        assert response.getheader("Location") == "/admin/login/?next=/ops/"
    finally:
        connection.close()


# --- the simulator -----------------------------------------------------------------------


def _simulator_online(page, token: str) -> None:
    page.fill("#token", token)
    page.click("#connect")
    page.wait_for_selector("#state[data-state=online]")


def test_simulator_receives_acks_goes_offline_and_catches_up(page, e2e):
    sender, mobile = e2e.sender(), e2e.mobile()
    page.goto("/simulator/")
    _simulator_online(page, mobile.token)
    # The long-lived token never went into a URL.
    assert mobile.token not in page.url

    first = e2e.send(sender, mobile, "hello from the API")
    row = page.locator(f"tr[data-id='{first['id']}']")
    row.wait_for()
    assert "hello from the API" in row.text_content()
    page.wait_for_selector(f"tr[data-id='{first['id']}'][data-status=acked]")
    e2e.wait_status(sender, [first["id"]], "delivered")

    # Read from the page.
    row.get_by_role("button", name="Read").click()
    e2e.wait_status(sender, [first["id"]], "read")

    # Offline: the next message waits as pending, then arrives on reconnect, after the first.
    page.click("#offline")
    page.wait_for_selector("#state[data-state=offline]")
    e2e.stack.wait(lambda: not _online(e2e, mobile), timeout=10, what="the server to see the page offline")
    second = e2e.send(sender, mobile, "sent while offline")
    e2e.wait_status(sender, [second["id"]], "pending")
    assert page.locator(f"tr[data-id='{second['id']}']").count() == 0

    page.click("#connect")
    page.wait_for_selector(f"tr[data-id='{second['id']}'][data-status=acked]")
    e2e.wait_status(sender, [second["id"]], "delivered")
    seqs = [int(s) for s in page.locator("#messages tr").evaluate_all("rows => rows.map(r => r.dataset.seq)")]
    assert seqs == sorted(seqs) and seqs[-1] == second["seq"] == first["seq"] + 1
    assert page.text_content("#gaps") == "none"


def test_simulator_with_auto_ack_off_acks_only_when_asked(page, e2e):
    sender, mobile = e2e.sender(), e2e.mobile()
    page.goto("/simulator/")
    _simulator_online(page, mobile.token)
    page.uncheck("#auto-ack")

    message = e2e.send(sender, mobile, "ack me by hand")
    row = page.locator(f"tr[data-id='{message['id']}']")
    page.wait_for_selector(f"tr[data-id='{message['id']}'][data-status=received]")
    # Written to the socket, not acknowledged: the API says sent (never delivered yet).
    e2e.wait_status(sender, [message["id"]], "sent")
    assert row.get_attribute("data-status") == "received"

    row.get_by_role("button", name="Ack").click()

    page.wait_for_selector(f"tr[data-id='{message['id']}'][data-status=acked]")
    e2e.wait_status(sender, [message["id"]], "delivered")


def test_simulator_says_when_the_token_is_refused_and_does_not_retry(page, e2e):
    page.goto("/simulator/")
    page.fill("#token", "not-a-token")
    page.click("#connect")

    page.wait_for_function("document.getElementById('state').textContent.indexOf('401') >= 0")
    assert page.get_attribute("#state", "data-state") == "offline"
    assert "reconnecting" not in page.text_content("#state")


def test_simulator_shows_a_message_canceled_while_offline_as_a_skipped_seq(page, e2e):
    sender, mobile = e2e.sender(), e2e.mobile()
    page.goto("/simulator/")
    _simulator_online(page, mobile.token)
    page.click("#offline")
    page.wait_for_selector("#state[data-state=offline]")
    e2e.stack.wait(lambda: not _online(e2e, mobile), timeout=10, what="the server to see the page offline")
    withdrawn, kept = e2e.send(sender, mobile, "withdrawn"), e2e.send(sender, mobile, "kept")
    e2e.wait_status(sender, [withdrawn["id"], kept["id"]], "pending")
    assert sender.api.post(f"/api/v1/messages/{withdrawn['id']}/cancel/").status == 200

    page.click("#connect")
    page.wait_for_selector(f"tr[data-id='{kept['id']}'][data-status=acked]")

    # The server's skip frame explains the canceled seq: a skipped row, no gap.
    page.wait_for_selector(f"tr[data-seq='{withdrawn['seq']}'][data-status=skipped]")
    assert page.locator(f"tr[data-id='{withdrawn['id']}']").count() == 0
    assert page.text_content("#gaps") == "none"


def test_simulator_shows_skipped_seqs_and_gaps(page, e2e):
    sender, mobile = e2e.sender(), e2e.mobile()
    page.goto("/simulator/")
    _simulator_online(page, mobile.token)
    first = e2e.send(sender, mobile, "one")
    page.wait_for_selector(f"tr[data-id='{first['id']}']")

    # What the server sends in place of a canceled message, then a later seq with one missing.
    page.evaluate("seq => window.simulator.receive({type: 'skip', seq: seq})", first["seq"] + 1)
    later = {
        "id": "00000000-0000-4000-8000-000000000000",
        "seq": first["seq"] + 3,
        "kind": "one_way",
        "conversation_id": None,
        "sender": {"type": "business", "id": 1, "name": "x"},
        "subject": "",
        "content": "later",
        "content_type": "text",
        "priority": "normal",
        "created_at": "",
        "attachments": [],
    }
    page.evaluate("m => window.simulator.receive({type: 'message', message: m})", later)

    assert page.get_attribute(f"tr[data-seq='{first['seq'] + 1}']", "data-status") == "skipped"
    assert page.get_attribute(f"tr[data-seq='{first['seq'] + 2}']", "data-status") == "missing"
    assert page.text_content("#gaps") == str(first["seq"] + 2)


def test_simulator_chats_and_types_into_a_conversation(page, e2e):
    sender, mobile = e2e.sender(), e2e.mobile()
    created = sender.api.post("/api/v1/conversations/", {"mobile_phone_number": mobile.user.phone_number})
    assert created.status == 201, created.body
    conversation_id = created.body["id"]
    desk = e2e.connect(token=sender.token, url=e2e.stack.business_ws_url, acking=True)
    page.goto("/simulator/")
    _simulator_online(page, mobile.token)

    page.click("#load-conversations")
    page.wait_for_function(f"document.getElementById('conversation-id').value === '{conversation_id}'")
    page.type("#chat-content", "Is my order shipped?")
    desk.wait_for(
        lambda s: any(
            f["conversation_id"] == conversation_id and f["is_typing"] for f in s.frames_of("typing")
        ),
        timeout=10,
        what="the business to see the mobile typing",
    )
    page.press("#chat-content", "Enter")

    question = desk.wait_for(
        lambda s: next((m for m in s.messages() if m["content"] == "Is my order shipped?"), None),
        timeout=10,
        what="the chat message at the business",
    )
    assert question["conversation_id"] == conversation_id
    # The business socket acked it: the page hears `delivered` in a status frame.
    page.wait_for_selector(f"#sent tr[data-key='{question['id']}'][data-status=delivered]")

    answer = sender.api.post(
        f"/api/v1/conversations/{conversation_id}/messages/", {"content": "It left today."}
    )
    assert answer.status == 202, answer.body
    page.wait_for_selector(f"tr[data-id='{answer.body['id']}'][data-status=acked]")
    assert "chat" in page.text_content(f"tr[data-id='{answer.body['id']}']")


def _online(e2e: E2E, mobile) -> bool:
    from apps.accounts import presence

    return presence.is_online(Party(mobile.user.party_kind, mobile.user.pk))
