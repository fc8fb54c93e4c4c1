"""The open-connections gauge follows sockets as they open and close."""

from __future__ import annotations

import pytest

from apps.common import metrics

from .conftest import async_test, mobile_socket, round_trip

pytestmark = pytest.mark.django_db(transaction=True)


def connections() -> float:
    return metrics.WEBSOCKET_CONNECTIONS._value.get()


@async_test
async def test_connection_gauge_goes_up_on_connect_and_down_on_disconnect(mobile_token, redis):
    before = connections()
    async with mobile_socket(mobile_token) as ws:
        await round_trip(ws)
        assert connections() == before + 1
    assert connections() == before
