"""Android pushes through firebase-admin's FCM HTTP v1 client (`messaging.send_each`).

The firebase app is built once per process from FCM_CREDENTIALS_FILE (a service-account
JSON). Its messaging service is pointed at FCM_ENDPOINT_URL, and the library's own urllib3
retries are turned off for that endpoint: retries are ours (services.push_send), so that
Retry-After is honoured by a later task instead of a worker thread sleeping on it.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import warnings

import firebase_admin
import requests
from django.conf import settings
from firebase_admin import credentials, exceptions, messaging
from google.auth import exceptions as auth_exceptions

from . import Notification, Result, Target, Verdict, parse_retry_after

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_app: firebase_admin.App | None = None
_app_key: tuple | None = None
_names = itertools.count()

# Answers that mean the token itself is dead (SPEC.md section 5).
_INVALID_TOKEN = (messaging.UnregisteredError, messaging.SenderIdMismatchError)
_CONFIGURATION = (
    exceptions.UnauthenticatedError,  # includes THIRD_PARTY_AUTH_ERROR (APNs credentials in FCM)
    exceptions.PermissionDeniedError,
    exceptions.NotFoundError,  # wrong project id; UNREGISTERED was matched before
)
_TRANSIENT = (
    exceptions.ResourceExhaustedError,  # QUOTA_EXCEEDED
    exceptions.UnavailableError,
    exceptions.InternalError,
    exceptions.DeadlineExceededError,
    exceptions.UnknownError,
)


def _firebase_app() -> firebase_admin.App:
    """Return this process's firebase app for the current settings (rebuilt if they changed)."""
    global _app, _app_key
    key = (os.getpid(), settings.FCM_CREDENTIALS_FILE, settings.FCM_ENDPOINT_URL)
    with _lock:
        if _app is not None and _app_key == key:
            return _app
        if _app is not None:
            firebase_admin.delete_app(_app)
        app = firebase_admin.initialize_app(
            credentials.Certificate(settings.FCM_CREDENTIALS_FILE),
            options={"httpTimeout": settings.PUSH_SEND_TIMEOUT_SECONDS},
            name=f"push-{os.getpid()}-{next(_names)}",
        )
        service = messaging._get_messaging_service(app)
        endpoint = settings.FCM_ENDPOINT_URL.rstrip("/")
        # firebase-admin builds the URL from a class constant; this is the one place to change it.
        service._fcm_url = f"{endpoint}/v1/projects/{service._project_id}/messages:send"
        service._client.session.mount(endpoint, requests.adapters.HTTPAdapter(max_retries=0))
        _app, _app_key = app, key
        return app


def _message(notification: Notification, token: str) -> messaging.Message:
    # Our tokens are FCM registration tokens, which HTTP v1 takes as `message.token`; the `fid`
    # that firebase-admin 7 suggests instead is a Firebase installation id, another thing.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Message.token is deprecated", category=DeprecationWarning)
        return _build(notification, token)


def _build(notification: Notification, token: str) -> messaging.Message:
    return messaging.Message(
        token=token,
        notification=messaging.Notification(title=notification.title, body=notification.body),
        data=notification.data,
        android=messaging.AndroidConfig(
            priority="high" if notification.high_priority else "normal",
            collapse_key=notification.collapse_key or None,
        ),
    )


def classify(error: exceptions.FirebaseError) -> Verdict:
    """Return what an FCM error means for the token it was sent to."""
    if isinstance(error, _INVALID_TOKEN):
        return Verdict.INVALID_TOKEN
    if isinstance(error, exceptions.InvalidArgumentError):
        # INVALID_ARGUMENT is about the token ("not a valid FCM registration token") or about
        # the message (too big, bad field): only the first kills the token.
        return Verdict.INVALID_TOKEN if "token" in str(error).lower() else Verdict.REJECTED
    if isinstance(error, _CONFIGURATION):
        return Verdict.CONFIGURATION
    if isinstance(error, _TRANSIENT):
        return Verdict.TRANSIENT
    return Verdict.REJECTED


def _result(target: Target, response: messaging.SendResponse) -> Result:
    if response.success:
        return Result(target.device_id, Verdict.SENT)
    error = response.exception
    retry_after = None
    if getattr(error, "http_response", None) is not None:
        retry_after = parse_retry_after(error.http_response.headers.get("Retry-After"))
    code = getattr(error, "code", type(error).__name__)
    return Result(target.device_id, classify(error), f"fcm {code}: {error}"[:500], retry_after)


def send(notification: Notification, targets: list[Target]) -> list[Result]:
    """Send `notification` to each Android token with one `send_each` call."""
    try:
        app = _firebase_app()
        batch = messaging.send_each([_message(notification, t.token) for t in targets], app=app)
    except (OSError, ValueError, auth_exceptions.DefaultCredentialsError) as exc:
        return _everyone(targets, Verdict.CONFIGURATION, f"fcm credentials: {exc}")
    except exceptions.FirebaseError as exc:
        # send_each raises only when something failed around the sends, typically fetching an
        # OAuth token: a refused grant is our configuration, an unreachable endpoint is not.
        if isinstance(exc.cause, auth_exceptions.RefreshError):
            return _everyone(targets, Verdict.CONFIGURATION, f"fcm credentials: {exc.cause}")
        return _everyone(targets, Verdict.TRANSIENT, f"fcm: {exc}")
    return [_result(t, r) for t, r in zip(targets, batch.responses, strict=True)]


def _everyone(targets: list[Target], verdict: Verdict, error: str) -> list[Result]:
    return [Result(t.device_id, verdict, error[:500]) for t in targets]
