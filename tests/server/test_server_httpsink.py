"""End to end: an application process tracks events and a mission through ``HttpSink``
into a server process, and they are read back through the query API."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from serving import ServerProcess

_KEY = "tk_e2e_ingest_read"

_APPLICATION = textwrap.dedent(
    """
    import sys
    import tachimeter as tm
    from tachimeter.collect.http_sink import HttpSink
    from tachimeter.missions import mission

    url, key = sys.argv[1], sys.argv[2]
    tm.configure(sinks=[HttpSink(url + "/v1/events", api_key=key)], env={}, flush_interval=0.2)
    for i in range(120):
        tm.track("feature_used", properties={"feature": "search", "i": i}, user_id="u-42")
    with mission(backend="anthropic", model="claude-sonnet-4", tags=["e2e"]) as m:
        m.step(0, success=True)
        m.tool("search", duration_ms=120, success=True)
        m.llm_call(model="claude-sonnet-4", input_tokens=500, output_tokens=300)
    print("flushed", tm.flush(timeout=30))
    tm.shutdown()
    """
)


def test_http_sink_events_and_missions_reach_the_query_api(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path / "analytics.db",
        {"rate_limit_per_second": 0},
        env={"TACHIMETER_API_KEY": f"{_KEY}:ingest+read"},
    )
    try:
        app = subprocess.run(
            [sys.executable, "-c", _APPLICATION, server.url, _KEY],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=tmp_path,
            env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
        )
        assert app.returncode == 0, app.stderr
        assert "flushed True" in app.stdout, app.stdout + app.stderr
        auth = {"Authorization": f"Bearer {_KEY}"}
        found: list[dict] = []
        cursor = ""
        while True:
            page = server.get(f"/v1/events/search?event=feature_used&limit=50{cursor}", auth)
            assert page.status == 200, page.body
            found += page.json()["events"]
            if not page.json()["next_cursor"]:
                break
            cursor = f"&cursor={page.json()['next_cursor']}"
        assert sorted(e["properties"]["i"] for e in found) == list(range(120))
        assert {e["user_id"] for e in found} == {"u-42"}
        # The collector assigned a session; the server kept it as given.
        assert len({e["session_id"] for e in found}) == 1 and found[0]["session_id"]
        missions = server.get("/v1/events/search?event=mission_started,mission_completed", auth)
        names = sorted(e["event_name"] for e in missions.json()["events"])
        assert names == ["mission_completed", "mission_started"]
    finally:
        server.stop()
