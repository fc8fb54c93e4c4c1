"""The shipped alerting rules: valid for promtool, and built only of metrics /metrics exposes."""

from __future__ import annotations

import re
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from apps.common import breaker, metrics

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"
RULES = PROMETHEUS / "alerts.yml"
# The seeds' list (SPEC.md section 9), each with the alert that covers it.
REQUIRED_ALERTS = {
    "MessagingDependencyDown",  # a dependency down
    "MessagingDeliverySuccessLow",  # delivery success < 95 %
    "MessagingApiErrors",  # API errors > 5 %
    "MessagingBacklogHigh",  # backlog > 10,000
    "MessagingDeliverySlow",  # mean delivery > 5 s
    "MessagingDeadLetters",  # dead letters present
}
NO_PROMTOOL = pytest.mark.skipif(
    shutil.which("promtool") is None, reason="promtool absent (apt-get install prometheus)"
)
METRIC_NAME = re.compile(r"\bmessaging_[a-z_]+\b")


def rule_expressions() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return [rule["expr"] for group in groups for rule in group["rules"]]


def exposed_names(text: str) -> set[str]:
    return {
        line.split("{")[0].split(" ")[0] for line in text.splitlines() if line and not line.startswith("#")
    }


def test_every_metric_an_alert_uses_is_exposed_after_some_traffic(anonymous_client, db, redis):
    metrics.messages_moved(to="delivered", count=1, accepted_at=[datetime.now(UTC).timestamp()])
    metrics.messages_moved(to="failed", count=1, reason="expired")
    breaker.breaker(breaker.PUSH_FCM).reset()
    anonymous_client.get("/health/live")
    text = anonymous_client.get("/metrics").content.decode()

    used = {name for expr in rule_expressions() for name in METRIC_NAME.findall(expr)}

    assert used, "no metric found in the rules"
    assert used - exposed_names(text) == set()


def test_the_rules_cover_the_seeds_list_and_each_has_a_test():
    groups = yaml.safe_load(RULES.read_text())["groups"]
    alerts = {rule["alert"] for group in groups for rule in group["rules"]}
    tested = {
        case["alertname"]
        for test in yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())["tests"]
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }

    assert alerts >= REQUIRED_ALERTS
    assert alerts - tested == set(), "every alert must fire in alerts_test.yml"


@NO_PROMTOOL
def test_promtool_accepts_the_rules():
    result = subprocess.run(["promtool", "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@NO_PROMTOOL
def test_each_alert_fires_past_its_threshold_and_not_inside_it():
    # deploy/prometheus/alerts_test.yml: series just past and just inside every threshold.
    result = subprocess.run(
        ["promtool", "test", "rules", "alerts_test.yml"], cwd=PROMETHEUS, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


@NO_PROMTOOL
def test_promtool_accepts_the_scrape_config():
    result = subprocess.run(
        ["promtool", "check", "config", "prometheus.yml"], cwd=PROMETHEUS, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
