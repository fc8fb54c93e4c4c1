"""bridge.group_send_many: a delivery round's burst of sends reaches every group, none fails."""

from __future__ import annotations

import pytest
from channels_redis.pubsub import RedisSingleShardConnection

from apps.accounts.party import Party
from apps.common import breaker as breakers
from apps.common import bridge
from tests.sockets import socket_open, socket_receive

GROUPS = 300


@pytest.fixture(autouse=True)
def _fresh_breakers(redis):
    breakers._closed_until.clear()
    yield
    breakers._closed_until.clear()


def test_a_round_to_hundreds_of_groups_at_once_reaches_each_exactly_once():
    channels = [socket_open(user_id) for user_id in range(1, GROUPS + 1)]

    outcomes = bridge.group_send_many(
        [(Party.mobile(user_id).group, {"type": "x", "n": user_id}) for user_id in range(1, GROUPS + 1)]
    )

    assert outcomes == [None] * GROUPS
    for user_id, channel in enumerate(channels, start=1):
        assert socket_receive(channel) == {"type": "x", "n": user_id}
    assert all(socket_receive(channel, timeout=0.05) is None for channel in channels[:20])


def test_a_round_is_published_in_one_pipeline_not_publish_by_publish(monkeypatch):
    # The layer's own publish waits for each reply under its shard's lock; a round must not use it.
    def one_by_one(self, channel, message):
        raise AssertionError("published one by one")

    monkeypatch.setattr(RedisSingleShardConnection, "publish", one_by_one)
    channels = [socket_open(user_id) for user_id in (1, 2)]

    outcomes = bridge.group_send_many(
        [(Party.mobile(1).group, {"type": "x"}), (Party.mobile(2).group, {"type": "y"})]
    )

    assert outcomes == [None, None]
    assert [socket_receive(c) for c in channels] == [{"type": "x"}, {"type": "y"}]
