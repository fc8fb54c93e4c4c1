"""p12: how soon a recipient who is offline is woken up (SPEC.md sections 5 and 6: p99 < 2 s).

The stack's worker runs the real firebase-admin client (PUSH_BACKEND=live) against the local
FCM server of the tests (tests/devices/fake_fcm.py, OAuth included), started before the stack
so that every process sees it. Mobile users that never connect, each with an Android device,
get one message each at a steady pace; the figure is the time from the send request to the
FCM server receiving that user's push.
"""

from __future__ import annotations

import time
from pathlib import Path

from tqdm import tqdm

from tests.devices.fake_fcm import FakeFcm
from tests.devices.pki import make_pki
from tests.e2e.harness import Api

from .stack import mobiles_create

PUSH_USERS = 40
PUSH_INTERVAL = 0.25  # seconds between sends: each is a first message, so each opens a window


class PushServers:
    """The local FCM server and the environment that points the stack's processes at it."""

    def __init__(self, workdir: Path) -> None:
        (workdir / "push-pki").mkdir(parents=True, exist_ok=True)
        pki = make_pki(workdir / "push-pki")
        self.fcm = FakeFcm(pki.google_public_pem).start()
        (workdir / "fcm").mkdir(exist_ok=True)
        account = pki.service_account_file(workdir / "fcm", f"{self.fcm.url}/token")
        self.env = {
            "PUSH_BACKEND": "live",
            "FCM_CREDENTIALS_FILE": str(account),
            "FCM_ENDPOINT_URL": self.fcm.url,
            "PUSH_SEND_TIMEOUT_SECONDS": "5",
        }

    def stop(self) -> None:
        self.fcm.stop()


def push_phase(args, load, servers: PushServers) -> dict:
    """Send one message to each of PUSH_USERS offline users; time each one's first push."""
    from apps.accounts.models import MobileUser
    from apps.devices.services import device_register

    start = args.clients + 1 + max(args.idle_sockets, 0) + 1  # numbers no other phase uses
    offline = mobiles_create(start, PUSH_USERS)
    tokens = {}
    for mobile in offline:
        token = f"bench-fcm-{mobile.id}"
        device_register(mobile_user=MobileUser.objects.get(pk=mobile.id), token=token, platform="android")
        tokens[mobile.id] = token
    api = Api(load.base_url, load.tokens[0])
    sent_at: dict[int, float] = {}
    refused = 0
    for mobile in tqdm(offline, desc="p12 sends to offline users", unit="msg", leave=True):
        at = time.time()
        response = api.post("/api/v1/messages/", {"recipient_phone_number": mobile.phone, "content": "wake"})
        if response.status == 202:
            sent_at[mobile.id] = at
        else:
            refused += 1
        time.sleep(PUSH_INTERVAL)
    deadline = time.monotonic() + args.drain_seconds
    while time.monotonic() < deadline and any(not servers.fcm.to(tokens[pk]) for pk in sent_at):
        time.sleep(0.05)
    latencies = sorted(
        servers.fcm.to(tokens[pk])[0].at - at for pk, at in sent_at.items() if servers.fcm.to(tokens[pk])
    )
    pct = {p: _percentile(latencies, p) for p in (50, 95, 99)}
    return {
        "status": "ok" if len(latencies) == len(sent_at) and sent_at else "incomplete",
        "sent": len(sent_at),
        "refused": refused,
        "pushed": len(latencies),
        "pushes_total": len(servers.fcm.received),
        "p50_s": pct[50],
        "p95_s": pct[95],
        "p99_s": pct[99],
        "max_s": latencies[-1] if latencies else None,
    }


def _percentile(ordered: list[float], p: int) -> float | None:
    """Nearest-rank percentile of sorted `ordered` (None when empty)."""
    if not ordered:
        return None
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]
