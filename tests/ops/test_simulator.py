"""The client simulator page exists only where SIMULATOR_ENABLED says so."""

from __future__ import annotations


def test_simulator_is_404_when_disabled(client, db, settings):
    settings.SIMULATOR_ENABLED = False

    response = client.get("/simulator/")

    assert response.status_code == 404
    assert response.json() == {"detail": "Not found: /simulator/"}


def test_simulator_page_is_served_when_enabled_and_needs_nothing_from_outside(client, db, settings):
    settings.SIMULATOR_ENABLED = True

    response = client.get("/simulator/")

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="token"' in html and "/static/ops/simulator.js" in html
    assert "https://" not in html and "//cdn" not in html
    script = client.get("/static/ops/simulator.js")
    assert script.status_code == 200
    body = b"".join(script.streaming_content).decode()
    # The long-lived token goes in a header; only the single-use ticket is in the URL.
    assert "?ticket=" in body and "Authorization" in body
