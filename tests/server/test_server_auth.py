"""API keys and scopes, constant-time comparison, loopback-only without keys, 429."""

from __future__ import annotations

import hmac
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from serving import ServerProcess, wire_events

from tachimeter.errors import ConfigError
from tachimeter.server.auth import KeyRing, RateLimiter
from tachimeter.server.settings import ApiKeySettings, ServerSettings, load_server_settings

INGEST = "tk_ingest_only_1"
READ = "tk_read_only_22"
ADMIN = "tk_admin_333333"


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    db = tmp_path_factory.mktemp("auth") / "analytics.db"
    process = ServerProcess(
        db,
        {"rate_limit_per_second": 0},
        env={"TACHIMETER_API_KEY": f"{INGEST}:ingest,{READ}:read,{ADMIN}:admin"},
    )
    try:
        yield process
    finally:
        process.stop()


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def test_missing_or_wrong_keys_get_401_with_a_challenge(keyed: ServerProcess) -> None:
    for headers in ({}, _bearer("tk_wrong_key_99"), {"Authorization": "Basic abc"}):
        answer = keyed.post_json("/v1/events", wire_events(1), headers)
        assert answer.status == 401, headers
        assert answer.headers["www-authenticate"].startswith("Bearer")
        assert "API key" in answer.json()["detail"]
    assert keyed.get("/v1/events/search").status == 401


def test_scopes_are_enforced_per_endpoint(keyed: ServerProcess) -> None:
    events = wire_events(2, "scoped_event")
    assert keyed.post_json("/v1/events", events, _bearer(READ)).status == 403
    assert keyed.post_json("/v1/events", events, _bearer(INGEST)).status == 200
    denied = keyed.get("/v1/events/search?event=scoped_event", _bearer(INGEST))
    assert denied.status == 403 and "'read' scope" in denied.json()["detail"]
    for key in (READ, ADMIN):  # admin includes read
        found = keyed.get("/v1/events/search?event=scoped_event", _bearer(key))
        assert found.status == 200 and len(found.json()["events"]) == 2
    assert keyed.get("/metrics", {"X-API-Key": READ}).status == 200


def test_health_and_the_dashboard_page_need_no_key(keyed: ServerProcess) -> None:
    assert keyed.get("/healthz").status == 200
    assert keyed.get("/readyz").status == 200


def test_every_key_is_compared_in_constant_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """hmac.compare_digest runs once per configured key, wherever (or whether) it matches."""
    keys = [ApiKeySettings(name=f"k{i}", key=f"tk_key_number_{i}") for i in range(5)]
    ring = KeyRing(keys)
    calls: list[int] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(1)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    for presented in ("tk_key_number_0", "tk_key_number_4", "tk_no_such_key"):
        calls.clear()
        ring.authenticate(presented)
        assert len(calls) == 5, presented
    assert ring.authenticate("tk_key_number_3") is not None
    assert ring.authenticate("tk_key_number_3".upper()) is None


def test_without_keys_only_loopback_addresses_are_allowed(tmp_path: Path) -> None:
    for host in ("127.0.0.1", "::1", "localhost", "127.8.9.10"):
        ServerSettings(host=host)
    for host in ("0.0.0.0", "192.168.1.10", "example.com", "::"):
        with pytest.raises(ConfigError, match="not a loopback address"):
            ServerSettings(host=host)
    keyed = load_server_settings(env={"TACHIMETER_API_KEY": "tk_some_key_1"}, host="0.0.0.0")
    assert keyed.host == "0.0.0.0"
    result = subprocess.run(
        [sys.executable, "-m", "tachimeter.cli", "serve", "--host", "0.0.0.0", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
    )
    assert result.returncode != 0
    assert "not a loopback address and no API key is configured" in result.stderr


def test_key_settings_are_checked_at_configuration() -> None:
    with pytest.raises(ConfigError, match="unknown scope 'write'"):
        load_server_settings(env={"TACHIMETER_API_KEY": "tk_some_key_1:write"})
    with pytest.raises(ConfigError, match="at least 8 characters"):
        load_server_settings(env={"TACHIMETER_API_KEY": "short"})
    with pytest.raises(ConfigError, match="64 hex digits"):
        ApiKeySettings(name="x", key_sha256="abc")
    assert "tk_some_key_1" not in repr(ApiKeySettings(name="x", key="tk_some_key_1"))


def test_rate_limit_answers_429_with_retry_after(tmp_path: Path) -> None:
    process = ServerProcess(
        tmp_path / "analytics.db", {"rate_limit_per_second": 0.5, "rate_limit_burst": 3}
    )
    try:
        statuses = [process.get("/v1/events/search").status for _ in range(5)]
        assert statuses[:3] == [200, 200, 200]
        assert statuses[3:] == [429, 429]
        answer = process.get("/v1/events/search")
        assert answer.status == 429
        assert int(answer.headers["retry-after"]) >= 1
        assert "rate limit" in answer.json()["detail"]
        assert process.get("/healthz").status == 200  # not limited
    finally:
        process.stop()


def test_rate_limiter_refills_and_forgets_idle_clients() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0], max_clients=2)
    assert [limiter.take("a") for _ in range(3)] == [0.0, 0.0, 0.5]
    now[0] += 0.5
    assert limiter.take("a") == 0.0
    limiter.take("b")
    limiter.take("c")  # "a" is the least recently seen: forgotten, full bucket again
    assert limiter.take("a") == 0.0
