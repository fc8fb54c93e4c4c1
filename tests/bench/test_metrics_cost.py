"""The benchmark's p13 times the recording calls a send makes with the application's own API."""

from __future__ import annotations

import pytest

from bench.metrics_cost import call_costs_us

# Outside a test transaction, so that the on_commit callbacks it times run (as in the processes).
pytestmark = pytest.mark.django_db(transaction=True)


def test_p13_times_every_recording_call_of_a_send():
    # It calls apps.common.metrics as the code under test does (e.g. accepted_at as epoch
    # seconds): a change there that the benchmark did not follow fails here, not in a long run.
    costs = call_costs_us(number=50, repeat=1)
    assert set(costs) == {"http_request", "accepted", "delivered", "counter"}
    assert all(0 < us < 10_000 for us in costs.values()), costs
