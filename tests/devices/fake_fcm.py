"""A local FCM HTTP v1-compatible server, with the OAuth token endpoint of Google's.

`POST /token` checks the service account's signed JWT assertion and issues an access token;
`POST /v1/projects/<project>/messages:send` checks that token and answers each message with a
reply scripted per device token (200 by default), in the error format of the real API.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs

import jwt

from tests.devices.scripted import ScriptedReplies

SEND_PATH = re.compile(r"^/v1/projects/(?P<project>[^/]+)/messages:send$")
# google-auth always signs its assertion for Google's token endpoint, whatever token_uri says.
GOOGLE_TOKEN_AUDIENCE = "https://oauth2.googleapis.com/token"
FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
STATUS_CODES = {
    "INVALID_ARGUMENT": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 429,
    "INTERNAL": 500,
    "UNAVAILABLE": 503,
}


@dataclass(frozen=True)
class Reply:
    """A scripted answer: an error `status` (e.g. UNAVAILABLE), FCM `error_code`, Retry-After."""

    status: str = ""
    error_code: str = ""
    message: str = "error"
    retry_after: str = ""


@dataclass(frozen=True)
class Received:
    project: str
    token: str
    message: dict
    at: float


class FakeFcm(ScriptedReplies[Reply]):
    def __init__(self, google_public_pem: bytes) -> None:
        super().__init__()
        self.google_public_pem = google_public_pem
        self.oauth_grants = 0
        self.refuse_oauth = False
        self._access_tokens: set[str] = set()
        self._numbers = itertools.count(1)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeFcm:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def reset(self) -> None:
        super().reset()
        self.refuse_oauth = False

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _json(self, code: int, body: dict, headers: dict | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json; charset=UTF-8")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def _error(self, status: str, message: str, error_code: str = "", headers=None) -> None:
                error = {"code": STATUS_CODES[status], "message": message, "status": status}
                if error_code:
                    error["details"] = [{"@type": FCM_ERROR_TYPE, "errorCode": error_code}]
                self._json(STATUS_CODES[status], {"error": error}, headers)

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path == "/token":
                    self._token(body)
                elif match := SEND_PATH.match(self.path):
                    self._send(match["project"], body)
                else:
                    self._json(
                        404, {"error": {"code": 404, "message": "no such path", "status": "NOT_FOUND"}}
                    )

            def _token(self, body: bytes) -> None:
                form = parse_qs(body.decode())
                try:
                    if fake.refuse_oauth:
                        raise jwt.InvalidTokenError("refused by the test")
                    jwt.decode(
                        form["assertion"][0],
                        fake.google_public_pem,
                        algorithms=["RS256"],
                        audience=GOOGLE_TOKEN_AUDIENCE,
                    )
                except (KeyError, jwt.InvalidTokenError):
                    self._json(400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."})
                    return
                access = f"ya29.fake-{next(fake._numbers)}"
                with fake._lock:
                    fake._access_tokens.add(access)
                    fake.oauth_grants += 1
                self._json(200, {"access_token": access, "expires_in": 3600, "token_type": "Bearer"})

            def _send(self, project: str, body: bytes) -> None:
                bearer = self.headers.get("Authorization", "").removeprefix("Bearer ")
                if bearer not in fake._access_tokens:
                    self._error("UNAUTHENTICATED", "Request had invalid authentication credentials.")
                    return
                message = json.loads(body)["message"]
                token = message.get("token", "")
                with fake._lock:
                    fake.received.append(Received(project, token, message, time.time()))
                reply = fake._next_reply(token)
                if reply is None:
                    self._json(200, {"name": f"projects/{project}/messages/{next(fake._numbers)}"})
                    return
                headers = {"Retry-After": reply.retry_after} if reply.retry_after else None
                self._error(reply.status, reply.message, reply.error_code, headers)

        return Handler
