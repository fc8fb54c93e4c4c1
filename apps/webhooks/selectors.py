"""Reads: a sender's webhook endpoints and their delivery attempts."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.accounts.models import User

from .models import WebhookDelivery, WebhookEndpoint


def endpoints_for(*, owner: User) -> QuerySet[WebhookEndpoint]:
    return WebhookEndpoint.objects.filter(owner=owner).order_by("-created_at", "-id")


def endpoint_for(*, owner: User, endpoint_id: int) -> WebhookEndpoint | None:
    """Return the caller's endpoint `endpoint_id`, or None (also when it is someone else's)."""
    return endpoints_for(owner=owner).filter(pk=endpoint_id).first()


def deliveries_for(*, endpoint: WebhookEndpoint) -> QuerySet[WebhookDelivery]:
    """Return the endpoint's delivery attempts, newest first, with their events."""
    return WebhookDelivery.objects.filter(endpoint=endpoint).select_related("event").order_by("-id")


def delivery_for(*, endpoint: WebhookEndpoint, delivery_id: int) -> WebhookDelivery | None:
    return deliveries_for(endpoint=endpoint).filter(pk=delivery_id).first()
