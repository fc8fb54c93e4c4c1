"""WebSocket authentication: the `Authorization: Token` header, or a single-use ticket.

Long-lived tokens never travel in a URL; browsers, which cannot set headers on a WebSocket,
first exchange their token for a 60 s ticket and pass that as `?ticket=`.
"""

from __future__ import annotations

from urllib.parse import parse_qs

from channels.db import database_sync_to_async
from django.db import DatabaseError

from apps.accounts.selectors import principal_for_ticket, principal_for_token


def _header(scope: dict, name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return value.decode("latin-1")
    return ""


def _resolve_sync(scope: dict):
    scheme, _, key = _header(scope, b"authorization").partition(" ")
    if scheme.lower() == "token" and key.strip():
        return principal_for_token(key=key.strip())
    ticket = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("ticket", [""])[0]
    if ticket:
        return principal_for_ticket(ticket=ticket)
    return None


# In the thread pool: a slow token lookup must not hold up other sockets' database calls.
_resolve = database_sync_to_async(_resolve_sync, thread_sensitive=False)


class TokenAuthMiddleware:
    """Put the authenticated principal (or None) in `scope["principal"]`."""

    def __init__(self, inner):
        self.inner = inner

    async def __call__(self, scope, receive, send):
        try:
            principal, unavailable = await _resolve(scope), False
        except DatabaseError:
            # The database is down: not a bad token (4401 would make an app log its user out)
            # but "try again later", which the consumer answers with 4503.
            principal, unavailable = None, True
        scope = dict(scope, principal=principal, auth_unavailable=unavailable)
        return await self.inner(scope, receive, send)
