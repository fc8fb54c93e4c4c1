"""Sequence numbers: each recipient's gapless, strictly increasing `seq`, taken many at a time.

A single send takes its seq in the statement that inserts it (services._insert_with_next_seq);
batches, broadcasts and the promotion of due scheduled messages take theirs here, for many
recipients in one statement, in the transaction that stores (or promotes) the messages.
"""

from __future__ import annotations

from django.db import connection
from django.db.models import F

from apps.accounts.models import MobileUser


def seqs_take(counts: dict[int, int]) -> dict[int, int]:
    """Reserve `counts[id]` consecutive seqs per recipient; return each one's first seq.

    Must run in the transaction that stores the messages. The recipients' rows are locked in
    id order first (a plain UPDATE locks in whatever order it scans), then bumped in one
    statement, so a rollback leaves no gap and concurrent sends take consecutive numbers.
    """
    ids = sorted(counts)
    if connection.vendor != "postgresql":
        # SQLite (local runs): the transaction already holds the file's write lock.
        for pk in ids:
            MobileUser.objects.filter(pk=pk).update(last_seq=F("last_seq") + counts[pk])
        last = dict(MobileUser.objects.filter(pk__in=ids).values_list("pk", "last_seq"))
        return {pk: last[pk] - counts[pk] + 1 for pk in ids}
    list(MobileUser.objects.filter(pk__in=ids).order_by("pk").select_for_update().values_list("pk"))
    table = MobileUser._meta.db_table
    values = ", ".join(["(%s::bigint, %s::bigint)"] * len(ids))
    params: list[int] = []
    for pk in ids:
        params += [pk, counts[pk]]
    with connection.cursor() as cursor:
        cursor.execute(
            f'UPDATE "{table}" AS u SET last_seq = u.last_seq + v.n '
            f"FROM (VALUES {values}) AS v(id, n) WHERE u.id = v.id RETURNING u.id, u.last_seq",
            params,
        )
        return {pk: last - counts[pk] + 1 for pk, last in cursor.fetchall()}
