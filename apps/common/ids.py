"""Identifiers: parsed from untrusted input, and filtered on many at once."""

from __future__ import annotations

import re
import uuid
from collections.abc import Collection, Iterable

from django.db import connection
from django.db.models import BooleanField, Model, Q
from django.db.models.expressions import RawSQL


def parse_uuid(value: object) -> uuid.UUID | None:
    """Return `value` as a UUID, or None when it is not one."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except (TypeError, ValueError, AttributeError):
        return None


# The text forms pg_array admits: a UUID (any case, with or without hyphens) or an integer.
_ARRAY_ELEMENT = re.compile(r"-?[0-9]+|[0-9a-fA-F]{8}-?(?:[0-9a-fA-F]{4}-?){3}[0-9a-fA-F]{12}")


def pg_array(values: Iterable[object]) -> str:
    """Return PostgreSQL's text form of an array of UUIDs or integers: `{v1,v2,...}`.

    Bound as one text parameter (`%s::uuid[]`), it costs a join here instead of psycopg's
    per-element list dumping with client-side binding (a 500-id array: 0.16 ms of CPU for the
    whole query, against 0.7 ms). Only UUIDs, integers and their text forms are admitted, so no
    value can add an element or change the array's shape; anything else is a ValueError.
    """
    parts = []
    for value in values:
        if isinstance(value, uuid.UUID) or (isinstance(value, int) and not isinstance(value, bool)):
            parts.append(str(value))
        elif isinstance(value, str) and _ARRAY_ELEMENT.fullmatch(value):
            parts.append(value)
        else:
            raise ValueError(f"not a UUID or an integer: {value!r}")
    return "{" + ",".join(parts) + "}"


def in_ids(model: type[Model], ids: Collection[object], *, field: str = "pk") -> Q:
    """Return a filter of `model` rows whose `field` is one of `ids` (well-formed: parse them first).

    On PostgreSQL, `column = ANY(%s::type[])`: one array parameter, instead of the placeholder
    and the Python-side preparation per value of `field__in` (a 500-id chunk: 1.5 ms of query
    compilation, against 0.3 ms). Elsewhere, `field__in`.
    """
    if connection.vendor != "postgresql":
        return Q(**{f"{field}__in": list(ids)})
    target = model._meta.pk if field == "pk" else model._meta.get_field(field)
    column = f'"{model._meta.db_table}"."{target.column}"'
    cast = target.rel_db_type(connection)
    return Q(RawSQL(f"{column} = ANY(%s::{cast}[])", [pg_array(ids)], output_field=BooleanField()))
