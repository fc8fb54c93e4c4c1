"""Where a webhook may point (SPEC.md section 8): https and public addresses only.

Checked twice: on registration (the URL's host is resolved and every answer checked) and on
every connection (`connect_address`), which resolves once, checks every answer and returns the
address to connect to, so a DNS answer that turns private after registration (rebinding) is
refused rather than sent to. `WEBHOOK_ALLOW_PRIVATE_URLS` (local runs, tests) admits private
addresses and plain http.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRefused(ValueError):
    """A webhook URL or address that must not be connected to; the message says why."""


def resolve(host: str, port: int) -> list[str]:
    """Return the addresses `host` resolves to, in the resolver's order, without duplicates.

    The one place that asks DNS (the tests replace it to script answers).
    """
    try:
        answers = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as exc:
        raise AddressRefused(f"the host {host!r} does not resolve ({exc})") from exc
    return list(dict.fromkeys(str(answer[4][0]) for answer in answers))


def address_refusal(address: IPAddress) -> str | None:
    """Return why `address` is not a public one webhooks may reach, or None when it is."""
    if isinstance(address, ipaddress.IPv6Address):
        # An IPv4 address written as IPv6 (::ffff:10.0.0.1, 6to4, Teredo) is judged as IPv4.
        embedded = address.ipv4_mapped or address.sixtofour or (address.teredo[1] if address.teredo else None)
        if embedded is not None:
            refusal = address_refusal(embedded)
            return f"{refusal} (embedded in {address})" if refusal else None
    if address.is_unspecified:
        return f"{address} is the unspecified address"
    if address.is_loopback:
        return f"{address} is a loopback address"
    if address.is_link_local:
        metadata = " (the cloud metadata service)" if str(address) == "169.254.169.254" else ""
        return f"{address} is a link-local address{metadata}"
    if address.is_multicast:
        return f"{address} is a multicast address"
    if address.is_reserved:
        return f"{address} is a reserved address"
    if address.is_private:
        return f"{address} is a private address"
    if not address.is_global:
        return f"{address} is a shared or special-purpose, not a public, address"
    return None


def _parse(url: str, *, allow_private: bool) -> tuple[str, int]:
    """Return the host and port of `url`, refusing a scheme or form webhooks must not use."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AddressRefused(f"the URL is malformed ({exc})") from exc
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise AddressRefused(
            "the URL must use https" if not allow_private else "the URL must use https or http"
        )
    if not parts.hostname:
        raise AddressRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("the URL must not carry credentials")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def _checked(host: str, port: int) -> list[str]:
    addresses = resolve(host, port)
    if not addresses:
        raise AddressRefused(f"the host {host!r} does not resolve")
    for answer in addresses:
        # A scope id (fe80::1%eth0) is link-local anyway; drop it to parse.
        refusal = address_refusal(ipaddress.ip_address(answer.split("%", 1)[0]))
        if refusal:
            raise AddressRefused(f"the host {host!r} resolves to {refusal}; webhooks need a public address")
    return addresses


def url_check(url: str) -> None:
    """Refuse (AddressRefused) a URL a webhook may not be registered with."""
    allow_private = settings.WEBHOOK_ALLOW_PRIVATE_URLS
    host, port = _parse(url, allow_private=allow_private)
    if not allow_private:
        _checked(host, port)


def connect_address(host: str, port: int) -> str:
    """Resolve `host` once and return the address to connect to, refusing non-public answers.

    Every answer must be allowed, not only the first: a resolver's order may change between
    this look-up and the next.
    """
    if settings.WEBHOOK_ALLOW_PRIVATE_URLS:
        return resolve(host, port)[0]
    return _checked(host, port)[0]


def scheme_check(url: str) -> None:
    """Refuse, at send time, a URL whose scheme or form is no longer allowed (settings changed)."""
    _parse(url, allow_private=settings.WEBHOOK_ALLOW_PRIVATE_URLS)
