"""What leaves for the sockets: message rows read as plain values, each frame encoded once.

Delivery (chunks, catch-up, retries) reads the columns a `message` frame needs with one query
(`values_list`, no model instances) and the chunk's attachments with one more, then encodes
each frame to JSON text here, once: the channel layer carries the text and every socket of the
recipient writes it as it is.
"""

from __future__ import annotations

import json
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any, NamedTuple

from django.db import connection
from django.db.models import CharField, Exists, FloatField, OuterRef, QuerySet
from django.db.models.expressions import RawSQL

from apps.accounts.models import PartyKind
from apps.accounts.party import Party
from apps.common.transient import TRANSIENT
from apps.media.models import Media
from apps.media.serializers import attachment_payload

from .models import Message

# Columns of a frame, and what delivery decides on (status, due time, expiry, active recipient).
COLUMNS = (
    "pk",
    "seq",
    "kind",
    "conversation_id",
    "sender_id",
    "sender__display_name",
    "sender__first_name",
    "sender__last_name",
    "sender__username",
    "sender_mobile_id",
    "sender_mobile__name",
    "sender_mobile__phone_number",
    "recipient_id",
    "recipient__is_active",
    "recipient_business_id",
    "recipient_business__is_active",
    "subject",
    "content",
    "content_type",
    "priority",
    "created_at",
    "status",
    "next_attempt_at",
    "expires_at",
    "has_attachments",  # an annotation (rows): the attachments are read only for those that have some
)
# The three times, as PostgreSQL gives them (rows): created_at as the frame's ISO 8601 text, the
# others as epoch seconds. psycopg hands a timestamptz to Django's Python loader (about 5 us
# each, three per row: a sixth of a worker's CPU per delivered message); text and floats load
# in C. Other databases give datetimes, converted the same way in Python (_plain).
_TABLE = Message._meta.db_table
_PG_TIMES = {
    "created_at": RawSQL(
        f"""to_char("{_TABLE}"."created_at" AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')""",
        [],
        output_field=CharField(),
    ),
    "next_attempt_at": RawSQL(f"""date_part('epoch', "{_TABLE}"."next_attempt_at")""", [], FloatField()),
    "expires_at": RawSQL(f"""date_part('epoch', "{_TABLE}"."expires_at")""", [], FloatField()),
}
_PG_COLUMNS = tuple(f"pg_{c}" if c in _PG_TIMES else c for c in COLUMNS)
_CREATED, _DUE, _EXPIRES = (COLUMNS.index(c) for c in ("created_at", "next_attempt_at", "expires_at"))


class Row(NamedTuple):
    """A message as delivery reads it (COLUMNS, in order)."""

    pk: uuid.UUID
    seq: int
    kind: str
    conversation_id: uuid.UUID | None
    sender_id: int | None
    sender_display_name: str | None
    sender_first_name: str | None
    sender_last_name: str | None
    sender_username: str | None
    sender_mobile_id: int | None
    sender_mobile_name: str | None
    sender_mobile_phone: str | None
    recipient_id: int | None
    recipient_active: bool | None
    recipient_business_id: int | None
    recipient_business_active: bool | None
    subject: str
    content: str
    content_type: str
    priority: str
    created_at: str  # ISO 8601, UTC, as the frame shows it
    status: str
    next_attempt_at: float | None  # epoch seconds
    expires_at: float | None  # epoch seconds
    has_attachments: bool

    @property
    def party(self) -> Party:
        """Return the recipient: whose stream `seq` counts in (a new Party each call)."""
        if self.recipient_id is not None:
            return Party.mobile(self.recipient_id)
        return Party.business(self.recipient_business_id)

    @property
    def recipient_is_active(self) -> bool:
        return bool(
            self.recipient_active if self.recipient_id is not None else self.recipient_business_active
        )


class Outgoing(NamedTuple):
    """A message ready for its recipient's sockets: the group and the encoded `message` frame.

    `pk` is None for a `skip` frame (a canceled message's seq, SPEC.md section 8).
    """

    pk: uuid.UUID | None
    group: str
    frame: str


def rows(messages: QuerySet[Message]) -> list[Row]:
    """Return the messages of `messages` (with its ordering) as delivery rows."""
    plain = (
        messages.select_related(None)
        .prefetch_related(None)
        .annotate(has_attachments=Exists(Media.objects.filter(message_id=OuterRef("pk"))))
    )
    if connection.vendor == "postgresql":
        plain = plain.annotate(**{f"pg_{name}": expression for name, expression in _PG_TIMES.items()})
        return [Row(*values) for values in plain.values_list(*_PG_COLUMNS)]
    return [_plain(values) for values in plain.values_list(*COLUMNS)]


def _plain(values: tuple) -> Row:
    """Return a row read with datetimes (not PostgreSQL) in the types PostgreSQL's rows have."""
    values = list(values)
    values[_CREATED] = iso_text(values[_CREATED])
    for i in (_DUE, _EXPIRES):
        values[i] = values[i].timestamp() if values[i] is not None else None
    return Row(*values)


def iso_text(at: datetime) -> str:
    """Return `at` (aware) as a frame shows it: ISO 8601 in UTC with a Z, microseconds if any."""
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _author(row: Row) -> dict[str, Any]:
    if row.sender_id is not None:
        full = f"{row.sender_first_name or ''} {row.sender_last_name or ''}".strip()
        name = row.sender_display_name or full or row.sender_username
        return {"type": PartyKind.BUSINESS, "id": row.sender_id, "name": name}
    return {
        "type": PartyKind.MOBILE,
        "id": row.sender_mobile_id,
        "name": row.sender_mobile_name or row.sender_mobile_phone,
    }


def _media_of(message_ids: list[uuid.UUID]) -> dict[uuid.UUID, list[Media]]:
    found: dict[uuid.UUID, list[Media]] = defaultdict(list)
    if not message_ids:
        return found
    for media in Media.objects.filter(message_id__in=message_ids).order_by(
        "message_id", "position", "created_at"
    ):
        found[media.message_id].append(media)
    return found


def payload(row: Row, attachments: list[dict]) -> dict[str, Any]:
    """Return the M object of a `message` frame (SPEC.md section 3) for a delivery row."""
    return {
        "id": str(row.pk),
        "seq": row.seq,
        "kind": row.kind,
        "conversation_id": str(row.conversation_id) if row.conversation_id else None,
        "sender": _author(row),
        "subject": row.subject,
        "content": row.content,
        "content_type": row.content_type,
        "priority": row.priority,
        # PostgreSQL writes the microseconds always, isoformat() only when there are some.
        "created_at": row.created_at.replace(".000000Z", "Z"),
        "attachments": attachments,
    }


def encode_frame(message_payload: dict[str, Any]) -> str:
    """Return the JSON text of the `message` frame carrying `message_payload`."""
    return json.dumps({"type": "message", "message": message_payload}, separators=(",", ":"))


def encode(delivery_rows: list[Row]) -> tuple[list[Outgoing], dict[uuid.UUID, Exception]]:
    """Encode the frames of `delivery_rows` (one query for all their attachments).

    Return the frames, and apart from them the messages whose frame could not be built, with
    the error: stored data that breaks the encoding (an attachment whose thumbnail key names no
    known format, ...) would break every delivery that includes it, the same way each time.
    Kept apart, such a message neither blocks the others nor is retried forever; the caller
    dead-letters it.
    """
    if not delivery_rows:
        return [], {}
    media_of = _media_of([r.pk for r in delivery_rows if r.has_attachments])
    frames: list[Outgoing] = []
    poisoned: dict[uuid.UUID, Exception] = {}
    for r in delivery_rows:
        try:
            attachments = [attachment_payload(media) for media in media_of.get(r.pk, [])]
            frames.append(Outgoing(r.pk, r.party.group, encode_frame(payload(r, attachments))))
        except TRANSIENT:
            raise  # storage or network trouble, not the row's data: the task retries
        except Exception as exc:  # noqa: BLE001 - any other error of this row's data is this row's
            poisoned[r.pk] = exc
    return frames, poisoned
