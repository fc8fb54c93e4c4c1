"""Insert many rows with PostgreSQL's COPY instead of `bulk_create`.

`bulk_create` compiles and prepares every value of every row in Python (for 1,000 messages,
25,000 `prepare_value` calls and an UNNEST of arrays quoted one element at a time): 125 ms of a
1,000-message batch's store. COPY streams the rows as they are and psycopg adapts them in C.
Like `bulk_create`, it runs no `save()` and sends no signals; unlike it, it does not read back
ids the database makes (auto-increment primary keys stay None), so it suits models with
client-made keys, or rows whose ids nobody needs.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from django.db import connections, router
from django.db.models import AutoField, JSONField, Model


def copy_insert(objs: Sequence[Model]) -> None:
    """Insert `objs`, all of one model, in one COPY (bulk_create on other databases)."""
    if not objs:
        return
    model = type(objs[0])
    alias = router.db_for_write(model)
    connection = connections[alias]
    if connection.vendor != "postgresql":
        model.objects.bulk_create(objs)
        return
    meta = model._meta
    fields = [f for f in meta.concrete_fields if not isinstance(f, AutoField)]
    stamped = [f for f in fields if getattr(f, "auto_now", False) or getattr(f, "auto_now_add", False)]
    as_json = {i for i, f in enumerate(fields) if isinstance(f, JSONField)}
    columns = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    sql = f"COPY {connection.ops.quote_name(meta.db_table)} ({columns}) FROM STDIN"
    # The raw psycopg cursor: Django's wrapper has no COPY; its errors still become Django's.
    with connection.cursor() as cursor, connection.wrap_database_errors, cursor.cursor.copy(sql) as copy:
        for obj in objs:
            for field in stamped:
                field.pre_save(obj, add=True)
            row = [_plain(getattr(obj, f.attname)) for f in fields]
            for i in as_json:
                row[i] = fields[i].get_db_prep_save(row[i], connection)
            copy.write_row(row)
    for obj in objs:
        obj._state.adding = False
        obj._state.db = alias


def _plain(value: object) -> object:
    # psycopg writes a Python Enum as its name; Django's choices are stored by value.
    return value.value if isinstance(value, enum.Enum) else value


def copy_rows(model: type[Model], attnames: Sequence[str], rows: Sequence[Sequence[object]]) -> None:
    """Insert plain rows (values for `attnames`, in order) of `model` in one COPY.

    For hot paths that would otherwise build a model instance per row only to take it apart
    again (a 1,000-message batch spent 50 ms in Model.__init__). Values go as they are: give
    the database's types (no JSON fields here). Other databases get one executemany INSERT.
    """
    if not rows:
        return
    connection = connections[router.db_for_write(model)]
    by_attname = {f.attname: f for f in model._meta.concrete_fields}
    fields = [by_attname[name] for name in attnames]
    names = ", ".join(connection.ops.quote_name(f.column) for f in fields)
    table = connection.ops.quote_name(model._meta.db_table)
    if connection.vendor != "postgresql":
        placeholders = ", ".join(["%s"] * len(fields))
        with connection.cursor() as cursor:
            cursor.executemany(
                f"INSERT INTO {table} ({names}) VALUES ({placeholders})",
                [
                    [f.get_db_prep_save(v, connection) for f, v in zip(fields, row, strict=True)]
                    for row in rows
                ],
            )
        return
    with (
        connection.cursor() as cursor,
        connection.wrap_database_errors,
        cursor.cursor.copy(f"COPY {table} ({names}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(row)
