#!/usr/bin/env python
"""Listen on the mobile WebSocket as a mobile user: print every frame, ack every message.

    .venv/bin/python scripts/ws_listen.py <mobile token>
    .venv/bin/python scripts/ws_listen.py --url ws://127.0.0.1:8001/ws/mobile/ --count 1 <token>

The token travels in the `Authorization: Token <key>` header, as a native app sends it. A
`{"type": "ping"}` heartbeat goes out every 25 s so the server keeps the connection online
(it needs one at least every 30 s). Frames received are printed as `< {...}`, frames sent as
`> {...}`. Needs only the `websockets` package from requirements/base.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake

PING_EVERY_SECONDS = 25
CLOSE_UNAUTHENTICATED = 4401


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Return the command-line options; the token may also come from $MOBILE_TOKEN."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("token", nargs="?", default=os.environ.get("MOBILE_TOKEN"), help="mobile user token")
    parser.add_argument(
        "--url",
        default=f"ws://127.0.0.1:{os.environ.get('PORT', '8000')}/ws/mobile/",
        help="WebSocket URL (default: ws://127.0.0.1:$PORT/ws/mobile/, PORT defaults to 8000)",
    )
    parser.add_argument("--no-ack", action="store_true", help="print message frames without acking them")
    parser.add_argument("--read", action="store_true", help="also send a read receipt for each message")
    parser.add_argument("--count", type=int, default=0, help="exit after this many message frames (0: never)")
    args = parser.parse_args(argv)
    if not args.token:
        parser.error("a mobile token is required (argument or MOBILE_TOKEN)")
    return args


async def send(connection: ClientConnection, frame: dict) -> None:
    """Send one JSON frame and print it."""
    text = json.dumps(frame)
    await connection.send(text)
    print(f"> {text}", flush=True)


async def heartbeat(connection: ClientConnection) -> None:
    """Send an application ping every PING_EVERY_SECONDS until cancelled."""
    while True:
        await asyncio.sleep(PING_EVERY_SECONDS)
        await send(connection, {"type": "ping"})


async def listen(args: argparse.Namespace) -> int:
    """Connect, print frames and answer message frames; return the process exit code."""
    received = 0
    # proxy=None: a local server must not be reached through an HTTP(S)_PROXY of the environment.
    async with connect(
        args.url, additional_headers={"Authorization": f"Token {args.token}"}, proxy=None
    ) as ws:
        print(f"connected to {args.url}", file=sys.stderr, flush=True)
        pinger = asyncio.create_task(heartbeat(ws))
        try:
            async for text in ws:
                print(f"< {text}", flush=True)
                try:
                    frame = json.loads(text)
                except ValueError:
                    continue
                if frame.get("type") != "message":
                    continue
                message_id = frame["message"]["id"]
                if not args.no_ack:
                    await send(ws, {"type": "ack", "message_ids": [message_id]})
                if args.read:
                    await send(ws, {"type": "read", "message_ids": [message_id]})
                received += 1
                if args.count and received >= args.count:
                    return 0
        except ConnectionClosed:
            pass
        finally:
            pinger.cancel()
    if ws.close_code == CLOSE_UNAUTHENTICATED:
        print("closed 4401: the token is not a valid mobile user token", file=sys.stderr)
        return 1
    print(f"connection closed (code {ws.close_code})", file=sys.stderr)
    return 0 if ws.close_code in (1000, 1001) else 1


def main() -> int:
    """Run the listener until the server closes, --count is reached or Ctrl-C."""
    args = parse_args()
    try:
        return asyncio.run(listen(args))
    except KeyboardInterrupt:
        return 0
    except (OSError, InvalidHandshake) as exc:
        print(f"cannot connect to {args.url}: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
