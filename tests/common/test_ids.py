"""in_ids: one array parameter finds exactly what `__in` finds, for uuid and integer keys."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.db.models import Q

from apps.accounts.models import MobileUser
from apps.common.ids import in_ids, pg_array
from apps.media.models import Media
from apps.messaging import services
from apps.messaging.models import Message
from tests.factories import MobileUserFactory

pytestmark = pytest.mark.django_db


def _found(model, q) -> set:
    return set(model.objects.filter(q).values_list("pk", flat=True))


def test_uuid_keys_as_uuids_or_as_text_find_the_same_rows_as_in(sender):
    users = MobileUserFactory.create_batch(3)
    messages = [
        services.message_send(sender=sender, recipient_phone_number=u.phone_number, content="hi")
        for u in users
    ]
    wanted = [messages[0].pk, messages[2].pk, uuid.uuid4()]  # one that names nothing

    assert _found(Message, in_ids(Message, wanted)) == {messages[0].pk, messages[2].pk}
    assert _found(Message, in_ids(Message, [str(pk) for pk in wanted])) == {messages[0].pk, messages[2].pk}
    assert _found(Message, in_ids(Message, wanted)) == _found(Message, Q(pk__in=wanted))
    assert _found(Message, in_ids(Message, [])) == set()


def test_integer_keys_and_foreign_key_columns(sender):
    users = MobileUserFactory.create_batch(4)
    assert _found(MobileUser, in_ids(MobileUser, [users[1].pk, users[3].pk])) == {users[1].pk, users[3].pk}
    assert _found(Media, in_ids(Media, [uuid.uuid4()], field="message")) == set()


def test_on_postgresql_it_is_one_array_parameter(sender):
    sql, params = Message.objects.filter(
        in_ids(Message, [uuid.uuid4(), uuid.uuid4()])
    ).query.sql_with_params()
    if connection.vendor == "postgresql":
        assert "= ANY(%s::uuid[])" in sql
        assert len(params) == 1 and params[0].count(",") == 1  # one text array of two


def test_the_array_text_holds_exactly_the_ids_given():
    a, b = uuid.uuid4(), uuid.uuid4()
    assert pg_array([a, str(b).upper(), 7, "-3"]) == f"{{{a},{str(b).upper()},7,-3}}"
    assert pg_array([]) == "{}"


@pytest.mark.parametrize(
    "value",
    ["a,b", "{1}", "1}", '"x"', "", " 1", "NULL", 1.5, True, None, b"1", "1;2", f"{uuid.uuid4()},1"],
)
def test_a_value_that_could_change_the_arrays_shape_is_refused(value):
    with pytest.raises(ValueError):
        pg_array([uuid.uuid4(), value])
