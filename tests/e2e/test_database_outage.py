"""PostgreSQL going away, by a TCP proxy between the processes and it: refused, blackholed, stalled.

Real daphne (two processes), worker and beat reach the database only through the proxy. While
it is cut, every send answers 503 with Retry-After fast (never a 500, never a hang) and the
readiness check names the database; once it is restored everything works again without a
restart, and every message accepted before the cut is still there and gets delivered.

Refused and blackholed, the proxy closes the connections the processes hold: the next query
fails at once and a new connection waits at most the pool's 1 s. Stalled, it keeps them open
but carries no packet either way (tests/e2e/tcp_proxy.py): requests running at that moment and
the next ones wait on an established connection, which only the kernel's TCP user timeout
with keepalives (DATABASE_TCP_USER_TIMEOUT, settings/base.py `with_connect_timeout`) ends.
Without it they waited until TCP's retransmissions gave up, about 15 minutes.
"""

from __future__ import annotations

import threading
import time

import pytest
from django.conf import settings

from .harness import Stack
from .tcp_proxy import BLACKHOLE, REFUSE, STALL, TcpProxy

# SPEC section 3: a dependency down is a 503 with Retry-After, "within a second or two".
MAX_FAST_SECONDS = 2.0
# A stalled connection is given up after the TCP user timeout (3 s by default; the stack's
# processes and this one read the same settings), plus a retransmission's slack.
TCP_USER_TIMEOUT = settings.DATABASES["default"]["OPTIONS"].get("tcp_user_timeout", 0) / 1000
MAX_SECONDS = {REFUSE: MAX_FAST_SECONDS, BLACKHOLE: MAX_FAST_SECONDS, STALL: TCP_USER_TIMEOUT + 1.5}
SENDS_BEFORE = 20
SENDS_DURING = 10
SENDS_AFTER = 10
# Callers sending back to back from threads across the cut, so that requests are running when
# it comes (for the stall: queries waiting on connections that go silent).
BACKGROUND_CALLERS = 4


@pytest.fixture
def proxy():
    proxy = TcpProxy(upstream=("127.0.0.1", 5432)).start()
    yield proxy
    proxy.close()


@pytest.fixture
def stack(e2e_database_name, tmp_path_factory, proxy):
    stack = Stack(database_name=e2e_database_name, workdir=tmp_path_factory.mktemp("stack"))
    stack.env["DATABASE_URL"] = f"postgres://postgres@127.0.0.1:{proxy.port}/{e2e_database_name}"
    try:
        stack.start()
    except BaseException:
        stack.close()
        raise
    yield stack
    stack.close()


def timed(call):
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


class Callers:
    """Threads posting sends back to back, recording (started, answered, status, id) of each."""

    def __init__(self, api, body: dict, count: int) -> None:
        self.api, self.body = api, body
        self.calls: list[tuple[float, float, int, str | None]] = []
        self.errors: list[str] = []  # what a thread found wrong (an assert in a thread fails nothing)
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(n,), daemon=True) for n in range(count)]
        for thread in self._threads:
            thread.start()

    def _run(self, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                response = self.api.post(
                    "/api/v1/messages/", {**self.body, "content": f"caller {n} #{i}"}, timeout=30
                )
            except OSError as exc:  # no answer in 30 s: the hang this test exists to rule out
                self.errors.append(f"caller {n}: {exc!r}")
                return
            answered = time.monotonic()
            if response.status not in (202, 503) or (
                response.status == 503 and int(response.headers.get("Retry-After", 0)) < 1
            ):
                self.errors.append(f"caller {n}: {response.status} {response.headers} {response.body}")
            message_id = response.body["id"] if response.status == 202 else None
            self.calls.append((started, answered, response.status, message_id))
            i += 1

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self._threads), "a request hung"
        assert not self.errors, self.errors  # never a 500, never a 503 without Retry-After

    def accepted(self) -> list[str]:
        return [pk for _, _, status, pk in self.calls if status == 202]

    def running_at(self, moment: float) -> list[float]:
        """Return how long after `moment` each request running at that moment was answered."""
        return [answered - moment for started, answered, _, _ in self.calls if started < moment < answered]


@pytest.mark.parametrize("mode", [REFUSE, BLACKHOLE, STALL])
def test_database_cut_answers_503_fast_and_recovers_losing_nothing(e2e, proxy, mode):
    sender, mobile = e2e.sender(), e2e.mobile()
    body = {"recipient_phone_number": mobile.user.phone_number}
    limit = MAX_SECONDS[mode]
    accepted = [e2e.send(sender, mobile, f"before {i}")["id"] for i in range(SENDS_BEFORE)]
    callers = Callers(sender.api, body, BACKGROUND_CALLERS)
    e2e.stack.wait(lambda: len(callers.calls) >= 2 * BACKGROUND_CALLERS, timeout=20, what="the callers")

    proxy.cut(mode)
    cut_at = time.monotonic()
    refusals, slowest = 0, 0.0
    for i in range(SENDS_DURING):
        response, took = timed(
            lambda i=i: sender.api.post("/api/v1/messages/", {**body, "content": f"during {i}"}, timeout=30)
        )
        assert response.status == 503, (mode, response.status, response.body)
        assert int(response.headers["Retry-After"]) >= 1
        assert "database" in response.body["detail"]
        assert took < limit, (mode, took)
        refusals += 1
        slowest = max(slowest, took)
    ready, ready_took = timed(lambda: e2e.api.get("/health/ready", timeout=30))
    assert ready.status == 503, ready.body
    assert "database" in ready.body["detail"]
    assert ready.body["checks"]["database"].startswith("failed")
    assert ready_took < limit, (mode, ready_took)

    code, socket_took = timed(lambda: e2e.connect(mobile, ready=False).wait_closed(timeout=30))
    assert code == 4503, code  # "try again later", not 4401: the token was not found bad
    assert socket_took < limit, (mode, socket_took)

    # The requests that were running when the database went away answered too (202 if they
    # were done with it, else 503), within the same bound of the cut.
    in_flight = callers.running_at(cut_at)
    assert in_flight, "no request was running at the cut"
    assert max(in_flight) < limit, (mode, in_flight)

    proxy.restore()
    restored_at = time.monotonic()
    callers.stop()
    accepted += callers.accepted()
    refusals += sum(1 for *_, status, _ in callers.calls if status == 503)

    def send_once(content: str = "after"):
        response = sender.api.post("/api/v1/messages/", {**body, "content": content}, timeout=10)
        assert response.status in (202, 503), (response.status, response.body)
        return response.body["id"] if response.status == 202 else None

    accepted.append(e2e.stack.wait(send_once, timeout=30, what="a send to succeed after the restore"))
    recovered_in = time.monotonic() - restored_at
    # Another web process, or another pooled connection, may still be finding out that its
    # connection died in the cut: it answers 503 with Retry-After, and the client retries.
    for i in range(SENDS_AFTER):
        accepted.append(
            e2e.stack.wait(
                lambda i=i: send_once(f"after {i}"), timeout=30, what=f"send {i} after the restore"
            )
        )
    assert e2e.api.get("/health/ready").status in (200,), "readiness recovers too"

    # Nothing accepted is lost: every message is there, and the pipeline (worker, beat's
    # relay, sweeps) delivers all of them to the recipient once it connects.
    socket = e2e.connect(mobile)
    socket.wait_for(lambda s: set(accepted) <= s.message_ids(), timeout=60, what="every accepted message")
    delivered = e2e.wait_status(sender, accepted, "delivered", timeout=60)
    lost = len(accepted) - len(delivered)
    assert all(p.alive() for p in (e2e.stack.web, e2e.stack.worker, e2e.stack.beat))
    print(
        f"\nFAULT database_{mode}: sent={len(accepted)} 503={refusals} lost={lost} "
        f"slowest_503={slowest:.2f}s ready_503={ready_took:.2f}s socket_4503={socket_took:.2f}s "
        f"in_flight_at_cut={len(in_flight)} in_flight_answered_within={max(in_flight):.2f}s "
        f"recovered_in={recovered_in:.2f}s"
    )
    assert lost == 0
