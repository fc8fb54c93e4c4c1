"""The batch validator's plain path gives exactly what DRF gives, or leaves the item to DRF."""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from apps.messaging.inputs import MAX_TTL_SECONDS, OneWayMessageInputSerializer, one_way_items_validate

PHONES = [
    "+14155550100",
    " +14155550101 ",
    "+442071838750",
    "4155550100",
    "+1415555",
    "",
    "  ",
    "+1 415 555 0102",
]
TEXTS = [
    "hello",
    "  padded  ",
    "",
    "   ",
    "<b>bold</b> &amp; more",
    "<script>x</script>",
    '{"a": 1}',
    "{bad",
    "a\x00b",
]
TEXTS += ["caf\u00e9", "emoji \U0001f600", "lone \ud800 surrogate", "x" * 4001]

field_values = {
    "recipient_phone_number": st.one_of(
        st.sampled_from(PHONES), st.integers(), st.none(), st.text(max_size=40)
    ),
    "content": st.one_of(st.sampled_from(TEXTS), st.text(max_size=30), st.integers(), st.none()),
    "content_type": st.one_of(
        st.sampled_from(["text", "json", "html", "", "TEXT"]), st.integers(), st.none()
    ),
    "subject": st.one_of(
        st.sampled_from(["", "  hi  ", "s" * 201, " " + "s" * 200, "\x00"]),
        st.text(max_size=20),
        st.integers(),
        st.none(),
    ),
    "priority": st.one_of(
        st.sampled_from(["low", "normal", "high", "urgent", "HIGH"]), st.none(), st.integers()
    ),
    "ttl_seconds": st.one_of(
        st.integers(min_value=-2, max_value=MAX_TTL_SECONDS + 2),
        st.sampled_from([None, True, 5.0, "5", 0]),
    ),
    "attachment_ids": st.sampled_from([[], ["0b7e2e1c-7f3c-4d3e-9a4f-0a4b5c6d7e8f"], "x", None]),
    "send_at": st.sampled_from([None, "2099-01-01T00:00:00Z"]),
    "extra": st.integers(),
}

items = st.fixed_dictionaries(
    {"recipient_phone_number": field_values["recipient_phone_number"], "content": field_values["content"]},
    optional={k: v for k, v in field_values.items() if k not in ("recipient_phone_number", "content")},
)


def _drf(batch: list) -> list[dict] | None:
    serializer = OneWayMessageInputSerializer(data=batch, many=True)
    return [dict(item) for item in serializer.validated_data] if serializer.is_valid() else None


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batch=st.lists(items, min_size=1, max_size=4))
@example(batch=[{"recipient_phone_number": "+14155550100", "content": "hello"}])
@example(
    batch=[
        {
            "recipient_phone_number": " +14155550100",
            "content": "<i>x</i>",
            "subject": " s ",
            "ttl_seconds": 60,
        }
    ]
)
def test_the_plain_path_agrees_with_drf_whenever_it_answers(batch):
    plain = one_way_items_validate(batch)
    if plain is None:
        return  # DRF validates the batch (and names the problems)
    drf = _drf(batch)
    assert drf is not None, f"the plain path accepted a batch DRF refuses: {batch!r}"
    assert plain == drf
    assert [list(item) for item in plain] == [list(item) for item in drf]  # the same keys, in order


def test_the_common_batch_takes_the_plain_path():
    batch = [
        {"recipient_phone_number": "+14155550100", "content": "hi", "priority": "high", "ttl_seconds": 60},
        {
            "recipient_phone_number": "+442071838750",
            "content": "<b>x</b>",
            "subject": "s",
            "attachment_ids": [],
        },
    ]
    plain = one_way_items_validate(batch)
    assert plain is not None
    assert plain == _drf(batch)
    assert "attachment_ids" not in plain[1]


def test_an_invalid_or_unusual_item_anywhere_sends_the_whole_batch_to_drf():
    good = {"recipient_phone_number": "+14155550100", "content": "hi"}
    for odd in (
        {**good, "content": ""},
        {**good, "recipient_phone_number": "12"},
        {**good, "ttl_seconds": "5"},
        {**good, "send_at": "2099-01-01T00:00:00Z"},
        {**good, "attachment_ids": ["0b7e2e1c-7f3c-4d3e-9a4f-0a4b5c6d7e8f"]},
        "not an object",
    ):
        assert one_way_items_validate([good, odd]) is None, odd


likely = st.fixed_dictionaries(
    {
        "recipient_phone_number": st.sampled_from([*PHONES[:3], "+1 415 555 0102"]),
        "content": st.sampled_from(TEXTS),
    },
    optional={
        "content_type": st.sampled_from(["text", "json", "html"]),
        "subject": st.sampled_from(["", "  hi  ", "s" * 200, " " + "s" * 200 + " ", "s" * 201]),
        "priority": st.sampled_from(["low", "normal", "high"]),
        "ttl_seconds": st.sampled_from([None, 1, 60, MAX_TTL_SECONDS, MAX_TTL_SECONDS + 1, 0]),
        "attachment_ids": st.just([]),
        "extra": st.integers(),
    },
)


@settings(max_examples=300, deadline=None)
@given(batch=st.lists(likely, min_size=1, max_size=3))
def test_mostly_valid_batches_get_drfs_answer_on_whichever_path(batch):
    plain = one_way_items_validate(batch)
    drf = _drf(batch)
    if plain is not None:
        assert plain == drf
        assert [list(item) for item in plain] == [list(item) for item in drf]
    else:
        # Only DRF can refuse: the plain path never leaves a batch DRF accepts without cause.
        assert drf is None or any(
            item.get("content_type") == "json" or len(item["content"]) > 4000 for item in batch
        ), batch
