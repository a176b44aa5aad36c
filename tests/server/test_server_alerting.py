"""The server evaluates an alert rule file while it serves (issue 8: "in the server")."""

from __future__ import annotations

import time
from pathlib import Path

from serving import ServerProcess, wire_events

RULES = """
interval = "1s"

[[channels]]
type = "log"

[[rules]]
name = "ErrorsHigh"
cooldown = "1s"
[rules.condition]
type = "error_rate"
threshold = 0.1
window = "15m"
min_total = 1
"""


def test_alert_rules_are_evaluated_and_fire_while_serving(tmp_path: Path) -> None:
    rules = tmp_path / "rules.toml"
    rules.write_text(RULES)
    server = ServerProcess(tmp_path / "a.db", settings={"alert_rules": str(rules)})
    try:
        answer = server.post_json("/v1/events", wire_events(5, name="error_occurred"))
        assert answer.status < 300, answer
        deadline = time.monotonic() + 30
        firing: list[object] = []
        while time.monotonic() < deadline and not firing:
            states = server.get("/v1/alerts").json()
            items = states if isinstance(states, list) else states.get("alerts", [])
            firing = [a for a in items if "ErrorsHigh" in str(a) and "firing" in str(a)]
            time.sleep(0.2)
        assert firing, server.get("/v1/alerts").json()
    finally:
        server.stop()
