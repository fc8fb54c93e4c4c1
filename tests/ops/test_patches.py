"""Patches of libraries' internals: each names the versions it was written for, and is in place."""

from __future__ import annotations

import inspect

import channels
import channels.consumer
import channels_redis
import httpcore
import httpx
import kombu
import pytest
from asgiref.sync import async_to_sync
from channels.consumer import AsyncConsumer
from channels_redis import pubsub
from kombu.transport import redis as redis_transport

from apps.common import bridge
from apps.realtime import consumers
from apps.webhooks import client
from messaging_project import celery


def test_the_kombu_patch_targets_the_installed_kombu():
    # Re-read kombu's QoS.restore_unacked before widening KOMBU_TESTED.
    assert kombu.__version__.startswith(celery.KOMBU_TESTED), (kombu.__version__, celery.KOMBU_TESTED)


def test_the_kombu_patch_is_installed_and_wraps_the_original():
    patched = redis_transport.QoS.restore_unacked
    assert patched is celery._restore_unacked_tolerating_lost_connection
    original = inspect.signature(patched).parameters["_restore"].default
    assert original.__qualname__ == "QoS.restore_unacked"
    assert list(inspect.signature(original).parameters) == ["self", "client"]


@pytest.mark.parametrize("name", ["ack", "reject"])
def test_settling_a_message_is_patched_around_the_originals(name):
    patched = getattr(redis_transport.QoS, name)
    assert patched.__name__ == "settle_tolerating_lost_connection"
    assert patched.wrapped.__qualname__ == f"QoS.{name}"
    assert list(inspect.signature(patched.wrapped).parameters)[:2] == ["self", "delivery_tag"]


@pytest.mark.parametrize("name", ["ack", "reject"])
def test_settling_on_a_channel_whose_connection_is_gone_is_skipped_not_fatal(name, settings, redis):
    # A real channel of the broker, closed as kombu closes it when the connection is lost:
    # its QoS outlives it, and the task running meanwhile settles its message through it.
    with kombu.Connection(settings.CELERY_BROKER_URL) as connection:
        channel = connection.channel()
        qos = channel.qos
        channel.close()
        assert channel.connection is None

        assert getattr(qos, name)("tag-1") is None  # unpatched: AttributeError, the worker stopped


def test_the_webhook_client_patch_targets_the_installed_httpx_and_httpcore():
    # apps/webhooks/client.py sets HTTPTransport._pool to a pool with the guarded backend.
    assert httpx.__version__.startswith(client.HTTPX_TESTED), (httpx.__version__, client.HTTPX_TESTED)
    assert httpcore.__version__.startswith(client.HTTPCORE_TESTED), httpcore.__version__
    transport = httpx.HTTPTransport()
    assert isinstance(transport._pool, httpcore.ConnectionPool)  # what the patch replaces
    assert "network_backend" in inspect.signature(httpcore.ConnectionPool).parameters


def test_the_webhook_client_connects_through_the_address_guard():
    client.client_reset()
    try:
        pool = client.client()._transport._pool
        assert isinstance(pool._network_backend, client._GuardedBackend)
    finally:
        client.client_reset()


def test_the_consumer_dispatch_restates_the_installed_channels_one():
    # ParticipantConsumer.dispatch is channels' AsyncConsumer.dispatch without the hop to close
    # old connections: re-read channels' dispatch before widening CHANNELS_TESTED.
    assert channels.__version__.startswith(consumers.CHANNELS_TESTED), channels.__version__
    source = inspect.getsource(AsyncConsumer.dispatch)
    assert "handler = getattr(self, get_handler_name(message), None)" in source
    assert "await aclose_old_connections()" in source
    assert "await handler(message)" in source


def test_the_consumer_dispatch_runs_handlers_without_the_connection_hop(monkeypatch):
    async_to_sync(_dispatch_without_hop)(monkeypatch)


async def _dispatch_without_hop(monkeypatch) -> None:
    def hop():
        raise AssertionError("a hop to close old connections")

    monkeypatch.setattr(channels.consumer, "aclose_old_connections", hop)
    consumer = consumers.MobileConsumer()
    seen = []

    async def handler(event):
        seen.append(event)

    consumer.catchup_done = handler
    await consumer.dispatch({"type": "catchup.done"})
    assert seen == [{"type": "catchup.done"}]
    with pytest.raises(ValueError, match="No handler for message type nope"):
        await consumer.dispatch({"type": "nope"})
    with pytest.raises(AssertionError, match="a hop"):  # channels' own dispatch still hops
        await AsyncConsumer.dispatch(consumer, {"type": "catchup.done"})


def test_the_pipelined_group_publish_targets_the_installed_channels_redis():
    # bridge._publish_pipelined does what RedisPubSubLoopLayer.group_send does, for many groups
    # at once: re-read group_send and RedisSingleShardConnection.publish before widening.
    assert channels_redis.__version__.startswith(bridge.CHANNELS_REDIS_TESTED), channels_redis.__version__
    group_send = inspect.getsource(pubsub.RedisPubSubLoopLayer.group_send)
    assert "group_channel = self._get_group_channel_name(group)" in group_send
    assert "shard = self._get_shard(group_channel)" in group_send
    assert "await shard.publish(group_channel, self.channel_layer.serialize(message))" in group_send
    publish = inspect.getsource(pubsub.RedisSingleShardConnection.publish)
    assert "async with self._lock:" in publish
    assert "self._ensure_redis()" in publish
    assert "await self._redis.publish(channel, message)" in publish
