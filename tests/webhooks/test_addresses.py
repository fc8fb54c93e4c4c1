"""Where webhooks may point: https and public addresses only, on registration and on every connect."""

from __future__ import annotations

import ipaddress

import pytest

from apps.messaging import lifecycle
from apps.messaging.models import Message, Status
from apps.webhooks import addresses, delivery
from apps.webhooks.models import WebhookDelivery, WebhookEndpoint, WebhookEvent

from ..factories import MessageFactory
from .conftest import endpoint_for

PUBLIC = "93.184.215.14"

REFUSED_ADDRESSES = [
    ("127.0.0.1", "loopback"),
    ("127.8.9.10", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.254", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local address (the cloud metadata service)"),
    ("169.254.1.1", "link-local"),
    ("0.0.0.0", "unspecified"),
    ("224.0.0.1", "multicast"),
    ("240.0.0.1", "reserved"),
    ("100.64.0.1", "not a public"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("fe80::1", "link-local"),
    ("fd00::1", "private"),
    ("ff02::1", "multicast"),
    ("::ffff:127.0.0.1", "loopback"),
    ("::ffff:169.254.169.254", "metadata"),
    ("::ffff:10.0.0.1", "private"),
    ("2002:a00:1::", "private"),  # 6to4 of 10.0.0.1
]


@pytest.fixture
def public_only(settings):
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False


@pytest.fixture
def dns(monkeypatch):
    """Scripted DNS: host -> list of answers (each call pops the first list if several are queued)."""
    answers: dict[str, list[list[str]]] = {}

    def resolve(host, port):
        try:
            ipaddress.ip_address(host)
            return [host]
        except ValueError:
            pass
        queued = answers.get(host)
        if not queued:
            raise addresses.AddressRefused(f"the host {host!r} does not resolve")
        return queued.pop(0) if len(queued) > 1 else queued[0]

    monkeypatch.setattr(addresses, "resolve", resolve)
    return answers


@pytest.mark.parametrize(("address", "named"), REFUSED_ADDRESSES)
def test_non_public_addresses_are_refused_with_their_kind(address, named):
    refusal = addresses.address_refusal(ipaddress.ip_address(address))
    assert refusal is not None
    for word in named.split(", "):
        assert word in refusal


@pytest.mark.parametrize("address", [PUBLIC, "8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses_pass(address):
    assert addresses.address_refusal(ipaddress.ip_address(address)) is None


# --- registration (API) --------------------------------------------------------------------


def _register(client, url):
    return client.post("/api/v1/webhooks/", {"url": url, "events": ["message.delivered"]}, format="json")


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.0.0.8/hook",
        "https://172.16.5.4/hook",
        "https://192.168.0.10/hook",
        "https://169.254.169.254/latest/meta-data/",
        "https://169.254.10.10/",
        "https://0.0.0.0/",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[fe80::1]/hook",
    ],
)
def test_registration_refuses_non_public_addresses(url, sender_client, public_only, dns):
    response = _register(sender_client, url)
    assert response.status_code == 400, response.json()
    assert "public address" in response.json()["detail"]
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    "url",
    [
        "https://localhost/hook",
        "https://2130706433/hook",  # 127.0.0.1 as one number
        "https://0x7f000001/hook",
        "https://0177.0.0.1/hook",  # octal
        "https://127.1/hook",
        "https://0/hook",
        "https://[::127.0.0.1]/hook",  # IPv4-compatible
        "https://[64:ff9b::a9fe:a9fe]/hook",  # NAT64 of the metadata address
        "https://[fd00:ec2::254]/hook",  # a cloud's IPv6 metadata address
        "https://100.100.100.200/hook",  # another cloud's metadata address (shared space)
    ],
)
def test_registration_refuses_other_spellings_of_non_public_addresses(url, sender_client, public_only):
    # Some the URL validator refuses first; the address check refuses each of them anyway,
    # through the system's resolver, which reads these spellings as the addresses they hide.
    with pytest.raises(addresses.AddressRefused, match="webhooks need a public address"):
        addresses.url_check(url)
    assert _register(sender_client, url).status_code == 400
    assert not WebhookEndpoint.objects.exists()


def test_registration_resolves_the_host_and_checks_every_answer(sender_client, public_only, dns):
    dns["internal.example.com"] = [["10.0.0.5"]]
    dns["mixed.example.com"] = [[PUBLIC, "127.0.0.1"]]
    dns["hooks.example.com"] = [[PUBLIC]]
    for host, address in (("internal.example.com", "10.0.0.5"), ("mixed.example.com", "127.0.0.1")):
        response = _register(sender_client, f"https://{host}/hook")
        assert response.status_code == 400
        assert f"{address} is a" in response.json()["detail"]
    response = _register(sender_client, "https://nowhere.example.com/hook")
    assert response.status_code == 400
    assert "does not resolve" in response.json()["detail"]
    assert _register(sender_client, "https://hooks.example.com/hook").status_code == 201


def test_http_is_refused_unless_private_urls_are_allowed(sender_client, public_only, dns, settings):
    dns["hooks.example.com"] = [[PUBLIC]]
    response = _register(sender_client, "http://hooks.example.com/hook")
    assert response.status_code == 400
    assert "https" in response.json()["detail"]
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = True
    assert _register(sender_client, "http://127.0.0.1:8080/hook").status_code == 201
    assert _register(sender_client, "http://hooks.example.com/hook").status_code == 201


@pytest.mark.parametrize(
    "url", ["ftp://hooks.example.com/x", "https://user:pw@hooks.example.com/x", "not a url"]
)
def test_other_schemes_credentials_and_garbage_are_400(url, sender_client, public_only, dns):
    dns["hooks.example.com"] = [[PUBLIC]]
    assert _register(sender_client, url).status_code == 400


def test_patching_the_url_is_checked_too(sender_client, sender, public_only, dns):
    dns["hooks.example.com"] = [[PUBLIC]]
    endpoint_id = _register(sender_client, "https://hooks.example.com/hook").json()["id"]
    response = sender_client.patch(
        f"/api/v1/webhooks/{endpoint_id}/", {"url": "https://169.254.169.254/"}, format="json"
    )
    assert response.status_code == 400
    assert WebhookEndpoint.objects.get().url == "https://hooks.example.com/hook"


# --- connection time -------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_dns_answer_turned_private_after_registration_is_refused_at_connect(
    sender, sender_client, mobile_user, public_only, dns, receiver
):
    # Registration sees a public address; the next look-up (the connect) answers loopback,
    # where a receiver is listening: nothing may reach it.
    dns["rebind.example.com"] = [[PUBLIC], ["127.0.0.1"]]
    url = f"https://rebind.example.com:{receiver.port}/hook"
    assert _register(sender_client, url).status_code == 201
    message = MessageFactory(sender=sender, recipient=mobile_user)
    lifecycle.transition(Message.objects.filter(pk=message.pk), to=Status.DELIVERED)

    endpoint = WebhookEndpoint.objects.get()
    delivery.lane_run(endpoint_id=endpoint.pk)

    assert receiver.requests == []
    attempt = WebhookDelivery.objects.get()
    assert attempt.status_code is None
    assert attempt.error.startswith("refused: ")
    assert "127.0.0.1 is a loopback address" in attempt.error
    assert WebhookEvent.objects.get().status == "pending"  # retried later, checked again


@pytest.mark.django_db(transaction=True)
def test_stored_private_url_is_refused_at_connect_once_private_urls_are_off(
    sender, mobile_user, receiver, settings
):
    endpoint = endpoint_for(sender, receiver.url)  # registered while allowed (local run)
    settings.WEBHOOK_ALLOW_PRIVATE_URLS = False
    message = MessageFactory(sender=sender, recipient=mobile_user)
    lifecycle.transition(Message.objects.filter(pk=message.pk), to=Status.SENT)
    delivery.lane_run(endpoint_id=endpoint.pk)
    assert receiver.requests == []
    assert "refused: the URL must use https" in WebhookDelivery.objects.get().error


@pytest.mark.django_db(transaction=True)
def test_connect_goes_to_the_checked_address_keeping_the_host_header(sender, mobile_user, receiver, dns):
    # Private URLs allowed (as in these tests' settings): the look-up is still made once and
    # the connection goes to its answer, with the URL's host in the Host header.
    dns["receiver.test"] = [["127.0.0.1"], ["10.9.9.9"]]
    endpoint = endpoint_for(sender, f"http://receiver.test:{receiver.port}/hook")
    message = MessageFactory(sender=sender, recipient=mobile_user)
    lifecycle.transition(Message.objects.filter(pk=message.pk), to=Status.SENT)
    assert delivery.lane_run(endpoint_id=endpoint.pk).delivered == 1
    [request] = receiver.requests
    assert request.headers["host"] == f"receiver.test:{receiver.port}"
